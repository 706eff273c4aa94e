"""Honest usage and correlation (issue 13): `usage` counts the text the client received, the
conscience's own tokens are in `conscience.usage` and /metrics; every upstream call a request
causes carries its request id and a W3C traceparent."""

from __future__ import annotations

import re

import httpx

from service.backends.correlation import trace_id_for, valid_traceparent
from tests.api.conftest import ASK_BODY, HARMFUL, REPAIRED, Proxy
from tests.fakes.openai_wire import tokenize
from tests.fakes.upstream import FakeUpstream

ASK = ASK_BODY["messages"]
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")


def stage_tokens(proxy: Proxy) -> dict[tuple[str, str], float]:
    samples = {}
    for line in proxy.metrics_text().splitlines():
        if line.startswith("conscience_stage_tokens_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            samples[(labels["stage"], labels["kind"])] = float(line.split()[-1])
    return samples


def test_after_a_repair_usage_counts_the_repair_and_the_conscience_its_own(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.policy_answer = HARMFUL
    completion = proxy.client().chat.completions.create(model="policy", messages=ASK)
    assert completion.choices[0].message.content == REPAIRED
    repair_tokens = len(tokenize(REPAIRED))
    assert completion.usage.completion_tokens == repair_tokens
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + repair_tokens
    usage = completion.model_extra["conscience"]["usage"]
    assert usage["judge"]["prompt_tokens"] > 0 and usage["judge"]["completion_tokens"] == 2  # two verdicts
    assert usage["repair"]["completion_tokens"] >= repair_tokens
    metrics = stage_tokens(proxy)
    assert metrics[("judge", "prompt")] == usage["judge"]["prompt_tokens"]
    assert metrics[("repair", "completion")] == usage["repair"]["completion_tokens"]


def test_a_clean_answer_keeps_its_usage(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.policy_answer = "Talk to them."
    completion = proxy.client().chat.completions.create(model="policy", messages=ASK)
    assert completion.usage.completion_tokens == len(tokenize("Talk to them."))
    assert completion.model_extra["conscience"]["usage"]["repair"] == {"prompt_tokens": 0, "completion_tokens": 0}


def test_every_upstream_call_carries_the_request_id_and_a_traceparent(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.policy_answer = HARMFUL
    response = httpx.post(
        f"{proxy.url}/chat/completions", json=ASK_BODY, headers={"X-Request-Id": "client-req-7"}, timeout=10
    )
    assert response.status_code == 200
    ours = response.headers["x-request-id"]  # never the client's (issue 26): test_request_ids.py
    calls = [c for c in fake.calls("verdict") + fake.calls("generation")]
    assert len(calls) >= 4  # generation, verdict, repair, verdict
    assert {c.headers["x-request-id"] for c in calls} == {ours}
    parents = [c.headers["traceparent"] for c in calls]
    assert all(TRACEPARENT.match(p) for p in parents)
    assert {p.split("-")[1] for p in parents} == {trace_id_for(ours)} == {ours}  # one trace
    assert len({p.split("-")[2] for p in parents}) == len(parents)  # a span id per call


def test_the_clients_traceparent_is_forwarded(proxy: Proxy, fake: FakeUpstream) -> None:
    theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    httpx.post(f"{proxy.url}/chat/completions", json=ASK_BODY, headers={"traceparent": theirs}, timeout=10)
    calls = fake.calls("verdict") + fake.calls("generation")
    assert {c.headers["traceparent"] for c in calls} == {theirs}


def test_malformed_traceparents_are_not_forwarded() -> None:
    assert valid_traceparent("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None
    assert valid_traceparent("garbage") is None
    assert trace_id_for("a" * 32) == "a" * 32 and len(trace_id_for("client-req-7")) == 32
