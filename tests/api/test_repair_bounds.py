"""Bounded repairs (issue 28): every draft honours the client's max_tokens and stop, the k
candidates are one streamed n=k upstream call, and a spent repair budget ends in a refusal
whose check says so."""

from __future__ import annotations

import pytest

from tests.api.conftest import ASK_BODY, HARMFUL, REPAIRED, ProxyFactory
from tests.fakes.openai_wire import tokenize
from tests.fakes.upstream import FakeUpstream

LONG_REPAIR = REPAIRED + " END " + " ".join(["Then talk again next week."] * 20)


def repair_calls(fake: FakeUpstream) -> list[dict]:
    """The repair's drafts (not its reframed questions, which are begun for the model)."""
    return [
        call.body for call in fake.calls("generation")
        if call.body.get("model") == "base-model" and not call.body.get("continue_final_message")
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_every_draft_honours_the_clients_max_tokens_and_stop(
    start_proxy: ProxyFactory, fake: FakeUpstream, stream: bool
) -> None:
    fake.policy_answer, fake.base_model_answer = HARMFUL, LONG_REPAIR
    proxy = start_proxy(repair_candidates=3)
    body = {**ASK_BODY, "max_tokens": 16, "stop": ["END"]}
    client = proxy.client()
    if stream:
        chunks = list(client.chat.completions.create(**body, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = client.chat.completions.create(**body).choices[0].message.content
    assert text.strip() == REPAIRED.strip()  # cut at the client's stop string, not at 512 tokens
    drafts = repair_calls(fake)
    assert drafts and all(d["max_tokens"] <= 16 and d["stop"] == ["END"] for d in drafts)
    assert len(tokenize(text)) <= 16


def test_a_draft_cut_at_the_clients_max_tokens_is_within_them(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    fake.policy_answer, fake.base_model_answer = HARMFUL, LONG_REPAIR
    proxy = start_proxy()
    completion = proxy.client().chat.completions.create(**ASK_BODY, max_tokens=6)
    assert completion.model_extra["conscience"]["repaired"]
    assert len(tokenize(completion.choices[0].message.content)) <= 6
    assert completion.usage.completion_tokens <= 6


def test_the_k_candidates_are_one_streamed_n_k_call(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    fake.policy_answer = HARMFUL
    proxy = start_proxy(repair_candidates=3, repair_strategy="regenerate")
    completion = proxy.client().chat.completions.create(**ASK_BODY)
    assert completion.choices[0].message.content == REPAIRED
    [draft] = repair_calls(fake)
    assert draft["n"] == 3 and draft["stream"] is True


def test_a_spent_token_budget_ends_in_the_refusal_recorded_as_such(
    start_proxy: ProxyFactory, fake: FakeUpstream
) -> None:
    fake.policy_answer = HARMFUL
    # 3 candidates of up to 12 tokens need 36: more than the budget, so none is drafted.
    proxy = start_proxy(repair_candidates=3, repair_max_draft_tokens=30)
    completion = proxy.client().chat.completions.create(**ASK_BODY, max_tokens=12)
    assert completion.choices[0].finish_reason == "content_filter"
    assert completion.model_extra["conscience"]["refused"]
    assert repair_calls(fake) == []
    [check] = proxy.wait_rows(_check_model(), 1)
    assert check.error == "repair budget spent: tokens" and not check.repaired


def test_a_spent_time_budget_ends_in_the_refusal_recorded_as_such(
    start_proxy: ProxyFactory, fake: FakeUpstream
) -> None:
    fake.policy_answer, fake.base_model_answer = HARMFUL, LONG_REPAIR
    fake.token_delay_s = 0.2  # the streamed drafts take 20 s; the budget is 1 s
    proxy = start_proxy(repair_max_seconds=1.0)
    completion = proxy.client().chat.completions.create(**ASK_BODY)
    assert completion.model_extra["conscience"]["refused"]
    [check] = proxy.wait_rows(_check_model(), 1)
    assert check.error == "repair budget spent: seconds"
    assert check.repair_ms < 5000


def _check_model() -> type:
    from service.store.models import Check

    return Check
