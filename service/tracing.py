"""OpenTelemetry tracing, off unless the standard `OTEL_*` variables turn it on.

`OTEL_TRACES_EXPORTER` chooses the exporter: unset or `none` (the default here) leaves tracing
off, and then nothing is wrapped and the OpenTelemetry SDK is never imported; `console` prints
spans; `otlp` sends them with `opentelemetry-exporter-otlp` (its own `OTEL_EXPORTER_OTLP_*`
variables: endpoint, protocol, headers). `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` name
the service (default `conscience`), and the SDK reads `OTEL_TRACES_SAMPLER` itself.

When on, one request is one tree: a SERVER span per HTTP request (continuing the caller's W3C
`traceparent`), and under it a span for each stage it causes: every upstream call
(`upstream POST /chat/completions`, CLIENT, to the response's head; its `traceparent` header is
this span's context, so vLLM's own traces join the tree), every judge call (`conscience.judge`),
every repair attempt (`conscience.repair`), and the hand-over of each record to the writer
(`conscience.record`; the batched insert happens later, off the request).
"""

from __future__ import annotations

import contextvars
import functools
import os
from collections.abc import Awaitable, Callable
from typing import Any

_provider: Any = None  # the TracerProvider in use; None: tracing is off
TRACER_NAME = "conscience"


def enabled() -> bool:
    return _provider is not None


def configure_from_environment() -> bool:
    """Install the exporter `OTEL_TRACES_EXPORTER` names (once per process); True when on."""
    global _provider
    if _provider is not None:
        return True
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if exporter_name in ("", "none"):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get(
        "OTEL_SERVICE_NAME", "conscience")}))
    for name in exporter_name.split(","):
        if name.strip() == "console":
            exporter: Any = ConsoleSpanExporter()
        elif name.strip() == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError as exc:
                raise RuntimeError(
                    "OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http"
                ) from exc
            exporter = OTLPSpanExporter()
        else:
            raise RuntimeError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (none, console, otlp)")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    use_provider(provider)
    return True


def use_provider(provider: Any) -> None:
    """Trace with this TracerProvider (tests: one with an in-memory exporter); None: off."""
    global _provider
    _provider = provider


def tracer() -> Any:
    return _provider.get_tracer(TRACER_NAME)


class TracingMiddleware:
    """Pure ASGI: one SERVER span per HTTP request, continuing an incoming `traceparent`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not enabled():
            await self.app(scope, receive, send)
            return
        from opentelemetry import propagate, trace

        carrier = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        status: dict[str, int] = {}

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        with tracer().start_as_current_span(
            f"{scope['method']} {scope['path']}", context=propagate.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": scope["method"], "url.path": scope["path"]},
        ) as span:
            await self.app(scope, receive, sending)
            if "code" in status:
                span.set_attribute("http.response.status_code", status["code"])
                if status["code"] >= 500:
                    span.set_status(trace.Status(trace.StatusCode.ERROR))


async def traced_upstream_send(request: Any, send: Callable[[Any], Awaitable[Any]]) -> Any:
    """An upstream HTTP call as a CLIENT span whose context is the request's `traceparent`
    (replacing any set earlier: with tracing on, the header names this span)."""
    if not enabled():
        return await send(request)
    from opentelemetry import propagate, trace

    with tracer().start_as_current_span(
        f"upstream {request.method} {request.url.path}", kind=trace.SpanKind.CLIENT,
        attributes={"http.request.method": request.method, "url.path": request.url.path},
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        for name, value in carrier.items():
            request.headers[name] = value
        response = await send(request)
        span.set_attribute("http.response.status_code", response.status_code)
        return response


class _Traced:
    """Delegates to `inner`; the named coroutine methods each run in a span."""

    def __init__(self, inner: Any, spans: dict[str, str]) -> None:
        self._inner = inner
        self._spans = spans

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        span_name = self._spans.get(name)
        if span_name is None:
            return attribute

        @functools.wraps(attribute)
        async def traced(*args: Any, **kwargs: Any) -> Any:
            with tracer().start_as_current_span(span_name):
                return await attribute(*args, **kwargs)

        return traced


class _TracedSink:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def submit(self, record: Any) -> None:
        with tracer().start_as_current_span("conscience.record") as span:
            span.set_attribute("conscience.record.kind", type(record).__name__)
            self._inner.submit(record)


def stage_context(name: str) -> tuple[contextvars.Context | None, Callable[[], None]]:
    """A span `name` under the current one that is not made current here — for work that runs
    in a task of its own (a streamed generation read in the background): the context to start
    that task in (`asyncio.create_task(..., context=)`) and the function that ends the span.
    (None, a no-op) while tracing is off."""
    if not enabled():
        return None, _nothing
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    span = tracer().start_span(name)
    context = contextvars.copy_context()
    context.run(otel_context.attach, trace.set_span_in_context(span))
    return context, span.end


def _nothing() -> None:
    return None


def traced_judge(judge: Any) -> Any:
    return _Traced(judge, {"judge": "conscience.judge"}) if enabled() else judge


def traced_repairer(repairer: Any) -> Any:
    return _Traced(repairer, {"candidates": "conscience.repair"}) if enabled() else repairer


def traced_sink(sink: Any) -> Any:
    return _TracedSink(sink) if enabled() else sink
