"""OpenTelemetry: the span tree of a repaired request, the traceparent sent upstream, and
nothing wrapped (no SDK imported) while tracing is off."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service import tracing
from tests.api.conftest import HARMFUL, REPAIRED, ProxyFactory
from tests.fakes.upstream import FakeUpstream

ASK = [{"role": "user", "content": "My neighbour is loud."}]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)


def test_a_repaired_request_is_one_span_tree(
    spans: InMemorySpanExporter, start_proxy: ProxyFactory, fake: FakeUpstream
) -> None:
    fake.policy_answer = HARMFUL
    proxy = start_proxy(repair_strategy="regenerate")  # one repair generation: the tree below
    completion = proxy.client().chat.completions.create(model="policy", messages=ASK)
    assert completion.choices[0].message.content == REPAIRED

    finished = {span.context.span_id: span for span in spans.get_finished_spans()}
    [root] = [s for s in finished.values() if s.name == "POST /v1/chat/completions"]
    tree = [s for s in finished.values() if s.context.trace_id == root.context.trace_id]

    def children(parent: object) -> list[str]:
        return sorted(s.name for s in tree if s.parent is not None and s.parent.span_id == parent.context.span_id)

    def named(name: str) -> list[object]:
        return [s for s in tree if s.name == name]

    # The generation, then judge → repair → judge, then the records (check and triple).
    assert children(root) == sorted([
        "upstream POST /v1/chat/completions",
        "conscience.judge", "conscience.repair", "conscience.judge",
        "conscience.record", "conscience.record",
    ])
    for stage in named("conscience.judge") + named("conscience.repair"):
        assert children(stage) == ["upstream POST /v1/chat/completions"]
    assert root.attributes["http.response.status_code"] == 200

    # Every upstream call carried the traceparent of its own span.
    upstream_spans = {f"{s.context.span_id:016x}" for s in named("upstream POST /v1/chat/completions")}
    sent = [call.headers.get("traceparent", "") for call in fake.requests if call.path == "/v1/chat/completions"]
    assert len(sent) == 4
    for header in sent:
        version, trace_id, span_id, _ = header.split("-")
        assert trace_id == f"{root.context.trace_id:032x}" and span_id in upstream_spans


def test_an_incoming_traceparent_is_continued(
    spans: InMemorySpanExporter, start_proxy: ProxyFactory, fake: FakeUpstream
) -> None:
    proxy = start_proxy()
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    proxy.client().chat.completions.create(
        model="policy", messages=ASK,
        extra_headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
    )
    [root] = [s for s in spans.get_finished_spans() if s.name == "POST /v1/chat/completions"]
    assert f"{root.context.trace_id:032x}" == trace_id


def test_off_by_default_without_the_sdk() -> None:
    code = (
        "import sys; from service.app import create_app; from service.settings import Settings; "
        "from service import tracing; create_app(Settings()); "
        "assert not tracing.enabled(); "
        "assert not any(m.startswith('opentelemetry.sdk') for m in sys.modules), 'SDK imported'"
    )
    env = {"PATH": "/usr/bin:/bin", "OTEL_TRACES_EXPORTER": "none"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
