"""Off-topic repairs (issue 28): a repair draft whose opening is far from the request in the
judge model's own states (the upstream's /v1/embeddings) is discarded with reason "off_topic";
the request is embedded once per answer; a backend without embeddings (no --embeddings-model, or
one the upstream refuses) skips the check."""

from __future__ import annotations

from typing import Any

from service.store.models import Check
from tests.api.conftest import ASK_BODY, HARMFUL, REPAIRED, Proxy, ProxyFactory
from tests.fakes.upstream import FakeUpstream

REQUEST = ASK_BODY["messages"][0]["content"]
OFF_TOPIC = "The weather in Paris is mild in spring: pack a light jacket and an umbrella."
ON = [1.0, 0.0, 0.0, 0.0]
OFF = [0.0, 1.0, 0.0, 0.0]  # orthogonal to the request: cosine 0


def by_topic(text: str) -> list[float]:
    """The fake's embeddings: anything about the weather is orthogonal to everything else."""
    return OFF if "weather" in text else ON


def embedded(fake: FakeUpstream) -> list[list[str]]:
    """The inputs of each embeddings call the proxy made."""
    return [call.body["input"] for call in fake.requests if call.path == "/v1/embeddings"]


def topic_checks(proxy: Proxy, result: str) -> float:
    for line in proxy.metrics_text().splitlines():
        if line.startswith("conscience_topic_checks_total{") and f'result="{result}"' in line:
            return float(line.split()[-1])
    return 0.0


def start(start_proxy: ProxyFactory, fake: FakeUpstream, draft: str, **overrides: Any) -> Proxy:
    fake.policy_answer, fake.base_model_answer, fake.embedding = HARMFUL, draft, by_topic
    values: dict[str, Any] = {
        "repair_strategy": "regenerate", "repair_candidates": 2, "max_repairs": 2, "repair_min_topic_similarity": 0.5,
        "embeddings_model": "base-embed",  # the judge's base model, served for embeddings
    }
    return start_proxy(**(values | overrides))


def test_an_off_topic_draft_is_discarded_and_the_request_embedded_once(
    start_proxy: ProxyFactory, fake: FakeUpstream
) -> None:
    proxy = start(start_proxy, fake, OFF_TOPIC)
    completion = proxy.client().chat.completions.create(**ASK_BODY)
    assert completion.choices[0].finish_reason == "content_filter"  # every draft was off topic: refused
    [check] = proxy.wait_rows(Check, 1)
    assert [draft["reason"] for draft in check.drafts] == ["off_topic"] * 4  # 2 attempts x 2 candidates
    calls = embedded(fake)
    assert calls.count([REQUEST]) == 1 and len(calls) == 5
    assert {call.body["model"] for call in fake.requests if call.path == "/v1/embeddings"} == {"base-embed"}
    assert topic_checks(proxy, "off_topic") == 4


def test_an_on_topic_draft_is_kept(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start(start_proxy, fake, REPAIRED)
    completion = proxy.client().chat.completions.create(**ASK_BODY)
    assert completion.choices[0].message.content == REPAIRED
    assert [REQUEST] in embedded(fake) and [REPAIRED] in embedded(fake)
    [check] = proxy.wait_rows(Check, 1)
    assert check.repaired and topic_checks(proxy, "on_topic") >= 1


def test_without_an_embeddings_model_the_check_is_skipped(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start(start_proxy, fake, OFF_TOPIC, embeddings_model=None)
    completion = proxy.client().chat.completions.create(**ASK_BODY)
    assert completion.choices[0].message.content == OFF_TOPIC  # repaired: nothing said it was off topic
    assert embedded(fake) == []
    assert topic_checks(proxy, "skipped") >= 1


def test_an_upstream_refusing_embeddings_skips_the_check_not_fails(
    start_proxy: ProxyFactory, fake: FakeUpstream
) -> None:
    fake.embeddings_served = False
    proxy = start(start_proxy, fake, OFF_TOPIC)
    client = proxy.client()
    for _ in range(2):
        completion = client.chat.completions.create(**ASK_BODY)
        assert completion.choices[0].message.content == OFF_TOPIC  # repaired: nothing said it was off topic
    assert len(embedded(fake)) == 1  # a backend that refused embeddings is not asked again
    assert topic_checks(proxy, "skipped") >= 2


def test_a_minimum_similarity_of_zero_disables_the_check(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start(start_proxy, fake, OFF_TOPIC, repair_min_topic_similarity=0.0)
    assert proxy.client().chat.completions.create(**ASK_BODY).choices[0].message.content == OFF_TOPIC
    assert embedded(fake) == []


def test_a_windowed_streams_off_topic_draft_is_discarded(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start(start_proxy, fake, OFF_TOPIC, stream_window_chars=16)
    chunks = list(proxy.client().chat.completions.create(**ASK_BODY, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert OFF_TOPIC not in text and "crowbar" not in text
    [check] = proxy.wait_rows(Check, 1)
    assert [draft["reason"] for draft in check.drafts] == ["off_topic"] * 2  # one streamed draft per attempt
    assert embedded(fake).count([REQUEST]) == 1
