"""Pure-ASGI middleware (cheaper than BaseHTTPMiddleware): request id, body limit, access log,
the answer to a request the server's shutdown ended."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.backends.correlation import traceparent_var, valid_traceparent
from service.errors import error_body
from service.logs import request_id_var
from service.metrics import Metrics
from service.shutdown import GracefulShutdown

log = logging.getLogger("conscience.access")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a body without Content-Length grows past the limit.

    An HTTPException so that FastAPI's body parsing re-raises it instead of calling it a 400.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large_message(limit))


def _too_large_message(limit: int) -> str:
    return f"Request body too large: the limit is {limit} bytes."


_SHUTTING_DOWN = orjson.dumps(error_body(
    "The server is shutting down and ended this request before its answer was ready; retry it.",
    "api_error", code="server_shutting_down",
))


async def _send_json(send: Send, status: int, body: bytes, request_id: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, metrics: Metrics, shutdown: GracefulShutdown
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.shutdown = shutdown
        self._children: dict[tuple[str, int], Any] = {}
        self._too_large = orjson.dumps(
            error_body(_too_large_message(max_body_bytes), "invalid_request_error")
        )

    def _counter(self, endpoint: str, status: int) -> Any:
        """The requests counter's child for these labels, looked up once (a bounded set: the
        endpoint labels are, and so are HTTP statuses)."""
        child = self._children.get((endpoint, status))
        if child is None:
            child = self._children[(endpoint, status)] = self.metrics.requests.labels(endpoint, str(status))
        return child

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        offered = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = offered if _SAFE_ID.match(offered) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        offered_trace = headers.get(b"traceparent", b"").decode("latin-1")
        trace_token = traceparent_var.set(valid_traceparent(offered_trace) if offered_trace else None)
        started = time.perf_counter()
        status_holder = [500]
        started_response = [False]
        try:
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                status_holder[0] = 413
                await _send_json(send, 413, self._too_large, request_id)
                return

            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body_bytes:
                        raise BodyTooLarge(self.max_body_bytes)
                return message

            async def tagged_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status_holder[0] = message["status"]
                    started_response[0] = True
                    message.setdefault("headers", [])
                    if not any(k.lower() == b"x-request-id" for k, _ in message["headers"]):
                        message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
                await send(message)

            with self.shutdown.request():
                await self.app(scope, limited_receive, tagged_send)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running when the shutdown's grace is over: one
            # not yet answered gets a 503 the client can retry on another replica. This task
            # exists only to serve the request, so ending it with that answer ends it. A stream
            # already under way is cut off (uvicorn closes the connection): no clean end is sent
            # for an answer that was not finished.
            if not self.shutdown.began or started_response[0]:
                raise
            status_holder[0] = 503
            await _send_json(send, 503, _SHUTTING_DOWN, request_id)
        finally:
            duration = (time.perf_counter() - started) * 1000.0
            path = scope.get("path", "")
            self._counter(_endpoint_label(path), status_holder[0]).inc()
            if log.isEnabledFor(logging.INFO):  # the access log's fields only when it is written
                log.info(
                    "request",
                    extra={"method": scope.get("method"), "path": path, "status": status_holder[0],
                           "duration_ms": round(duration, 2), "request_id": request_id},
                )
            request_id_var.reset(token)
            traceparent_var.reset(trace_token)


def _endpoint_label(path: str) -> str:
    # A bounded label set: unknown paths must not blow up Prometheus cardinality.
    known = ("/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/models", "/v1/embeddings",
             "/healthz", "/readyz", "/metrics")
    if path in known:
        return path
    return "/admin" if path.startswith("/admin") else "other"

