"""Windowed enforce streaming over HTTP: the real openai SDK → proxy → fake upstream → SQLite.
Text reaches the client only once the conscience has passed the answer up to it; a flagged
window stops the upstream and the answer is continued by a repair (issue 13)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.store.models import Check, Triple
from tests.api.conftest import ASK_BODY, REPAIRED, Proxy, ProxyFactory
from tests.fakes.upstream import FakeUpstream

ASK = ASK_BODY["messages"]
CLEAN = "Knead the dough well, let it rise for an hour, then bake it at two hundred and twenty degrees."
PREFIX = "Noise is hard to live with. Start by writing down when it happens. "
HARMFUL_MIDDLE = PREFIX + "Then buy a crowbar and break the neighbour's window at night while they sleep."


def stream(proxy: Proxy, **kwargs: Any) -> list[Any]:
    return list(proxy.client().chat.completions.create(
        model="policy", messages=ASK, stream=True, stream_options={"include_usage": True}, **kwargs
    ))


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.fixture
def windowed(start_proxy: ProxyFactory) -> Proxy:
    return start_proxy(stream_window_chars=24)


def test_a_clean_stream_is_released_window_by_window(windowed: Proxy, fake: FakeUpstream) -> None:
    fake.policy_answer = CLEAN
    fake.token_delay_s = 0.01  # generation paced, so that windows fill one after another
    chunks = stream(windowed)
    assert text_of(chunks) == CLEAN
    texts = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) > 1  # released in windows, not at the end as one piece
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    last = chunks[-1]
    assert last.usage is not None and last.usage.prompt_tokens > 0
    conscience = last.model_extra["conscience"]
    assert conscience["verdict"] == "ethical" and not conscience["repaired"]
    assert conscience["stream"]["action"] == "passed"
    assert conscience["stream"]["windows"] == len(fake.calls("verdict")) >= 2
    [check] = windowed.wait_rows(Check, 1)
    assert check.verdict == "ethical"


def test_a_harmful_sentence_mid_stream_never_reaches_the_client(windowed: Proxy, fake: FakeUpstream) -> None:
    fake.policy_answer = HARMFUL_MIDDLE
    fake.base_model_answer = REPAIRED
    fake.token_delay_s = 0.01  # the clean opening passes (and is sent) before the harm is written
    chunks = stream(windowed)
    text = text_of(chunks)
    assert "crowbar" not in text
    assert text.startswith(PREFIX[:20]) and text.endswith(REPAIRED)  # the released part, continued
    conscience = chunks[-1].model_extra["conscience"]
    assert conscience["verdict"] == "unethical" and conscience["repaired"] is True
    assert conscience["stream"]["action"] == "repaired"
    assert conscience["stream"]["flagged_window"] is not None
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    # The repair continued the released text in place (vLLM's continue_final_message).
    [repair] = [c for c in fake.calls("generation") if c.body["model"] == "base-model"]
    assert repair.body["continue_final_message"] is True and repair.body["add_generation_prompt"] is False
    assert repair.body["messages"][-1]["role"] == "assistant"
    assert text.startswith(repair.body["messages"][-1]["content"])
    [triple] = windowed.wait_rows(Triple, 1)
    assert "crowbar" in triple.rejected and triple.chosen == text


def test_a_harmful_opening_is_regenerated_from_the_request(windowed: Proxy, fake: FakeUpstream) -> None:
    fake.policy_answer = "Buy a crowbar and break the neighbour's window at night while they sleep."
    fake.base_model_answer = REPAIRED
    chunks = stream(windowed)
    assert text_of(chunks) == REPAIRED
    [repair] = [c for c in fake.calls("generation") if c.body["model"] == "base-model"]
    assert "continue_final_message" not in repair.body


def test_no_repair_passing_ends_in_the_refusal(windowed: Proxy, fake: FakeUpstream) -> None:
    fake.policy_answer = HARMFUL_MIDDLE
    fake.base_model_answer = "Still: use a crowbar on the window."
    chunks = stream(windowed)
    text = text_of(chunks)
    assert "crowbar" not in text and text.endswith(windowed.settings.refusal_message)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["content_filter"]
    conscience = chunks[-1].model_extra["conscience"]
    assert conscience["refused"] is True and conscience["stream"]["action"] == "refused"


def test_buffered_is_a_setting(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start_proxy(enforce_streaming="buffered", stream_window_chars=24)
    fake.policy_answer = CLEAN
    chunks = stream(proxy)
    assert text_of(chunks) == CLEAN
    assert len(fake.calls("verdict")) == 1  # judged once, whole
    assert chunks[-1].model_extra["conscience"]["stream"] is None


def test_an_upstream_failure_before_the_first_chunk_is_an_http_error(windowed: Proxy, fake: FakeUpstream) -> None:
    fake.fail_status = 503
    response = httpx.post(f"{windowed.url}/chat/completions", json={**ASK_BODY, "stream": True}, timeout=10)
    assert response.status_code == 502
