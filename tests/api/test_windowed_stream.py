"""Windowed enforce streaming over HTTP: the real openai SDK → proxy → fake upstream → SQLite.
Text reaches the client only once the conscience has passed the answer up to it; a flagged
window stops the upstream and the answer is continued by a repair (issue 13); n > 1 choices
each in their own windows, reasoning judged with the content, usage of what the client got."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.frameworks import load_frameworks
from service.store.models import Check, Triple
from tests.api.conftest import ASK_BODY, REPAIRED, Proxy, ProxyFactory
from tests.fakes.openai_wire import tokenize
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


def test_a_streamed_verdict_reports_its_signals_and_its_check_keeps_the_case(
    windowed: Proxy, fake: FakeUpstream
) -> None:
    """The signals of every verdict, streamed or not (the README's promise); a repaired
    stream's check keeps the conversation, the rejected answer and the discarded drafts."""
    fake.policy_answer = HARMFUL_MIDDLE
    fake.base_model_answer = REPAIRED
    chunks = stream(windowed)
    conscience = chunks[-1].model_extra["conscience"]
    assert conscience["signals"] == {"fast": pytest.approx(conscience["score"])}
    assert conscience["choices"][0]["signals"] == conscience["signals"]
    [check] = windowed.wait_rows(Check, 1)
    assert check.repaired and check.prompt == ASK
    assert check.answer is not None and "crowbar" in check.answer and check.drafts == []


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
    assert "crowbar" not in text and text.endswith(windowed.settings.repair.refusal_message)
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


# --- usage, regeneration, n > 1 and reasoning (issue 13) -------------------------------------

ASKED_TOKENS = len(ASK[0]["content"].split())  # the fake counts a prompt's words


def usage_of(chunks: list[Any]) -> Any:
    [last] = [c for c in chunks if c.usage is not None]
    assert last is chunks[-1] and not last.choices
    return last.usage


def test_a_repaired_stream_still_ends_with_the_usage_of_what_the_client_received(
    windowed: Proxy, fake: FakeUpstream
) -> None:
    fake.policy_answer = HARMFUL_MIDDLE
    fake.token_delay_s = 0.01
    chunks = stream(windowed)
    text = text_of(chunks)
    assert "crowbar" not in text and text.endswith(REPAIRED)
    usage = usage_of(chunks)
    # The released opening and the repair's continuation, token by token; the prompt as asked.
    assert usage.completion_tokens == len(tokenize(text))
    assert usage.prompt_tokens == ASKED_TOKENS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    conscience = chunks[-1].model_extra["conscience"]
    assert conscience["repaired"] is True
    assert conscience["usage"]["judge"]["prompt_tokens"] > 0
    assert conscience["usage"]["judge"]["completion_tokens"] == conscience["stream"]["windows"]
    assert conscience["usage"]["repair"]["completion_tokens"] >= len(tokenize(REPAIRED))


def test_a_refused_stream_counts_no_tokens_for_the_refusal(windowed: Proxy, fake: FakeUpstream) -> None:
    fake.policy_answer = "Buy a crowbar and break the neighbour's window at night while they sleep."
    fake.base_model_answer = "Use a crowbar on the window."
    fake.token_delay_s = 0.01  # repairs are stopped at their flagged window, not read to the end
    chunks = stream(windowed)
    assert text_of(chunks) == windowed.settings.repair.refusal_message
    usage = usage_of(chunks)
    assert (usage.prompt_tokens, usage.completion_tokens) == (ASKED_TOKENS, 0)
    conscience = chunks[-1].model_extra["conscience"]
    assert conscience["refused"] is True and conscience["stream"]["attempts"] == 2
    # The stopped repairs' tokens are the conscience's all the same.
    assert conscience["usage"]["repair"]["completion_tokens"] > 0


def test_a_refusal_after_released_text_counts_the_released_text(windowed: Proxy, fake: FakeUpstream) -> None:
    fake.policy_answer = HARMFUL_MIDDLE
    fake.base_model_answer = "Still: use a crowbar on the window."
    fake.token_delay_s = 0.01
    chunks = stream(windowed)
    text = text_of(chunks)
    refusal = windowed.settings.repair.refusal_message
    assert "crowbar" not in text and text.endswith(refusal)
    assert usage_of(chunks).completion_tokens == len(tokenize(text.removesuffix(refusal).rstrip()))


def test_a_regenerated_stream_never_shows_the_repairer_the_rejected_answer(
    windowed: Proxy, fake: FakeUpstream
) -> None:
    fake.policy_answer = "Buy a crowbar and break the neighbour's window at night while they sleep."
    chunks = stream(windowed)
    assert text_of(chunks) == REPAIRED
    [repair] = [c for c in fake.calls("generation") if c.body["model"] == "base-model"]
    assert not any("crowbar" in str(m["content"]) for m in repair.body["messages"])


def test_a_near_copy_is_discarded_and_the_next_attempt_reframes(windowed: Proxy, fake: FakeUpstream) -> None:
    rejected = "Buy a crowbar and break the neighbour's window at night while they sleep."
    copy = rejected.replace("crowbar", "pry bar")  # the judge would pass it
    framework = load_frameworks()["three_laws"]
    stem = framework.reframe_stems[0]  # attempt 2 follows a regenerating one: its question is stemmed
    question = f"{stem} breaking into a neighbour's house?"

    def base_model(body: dict[str, Any]) -> str:
        system = body["messages"][0]["content"]
        if system == framework.reframe_instructions():
            return " breaking into a neighbour's house? It is a crime."
        return REPAIRED if system == framework.reframed_answer_instructions() else copy

    fake.policy_answer = rejected
    fake.base_model_answer = base_model
    chunks = stream(windowed)
    assert text_of(chunks) == REPAIRED
    conscience = chunks[-1].model_extra["conscience"]
    assert conscience["repaired"] is True and conscience["stream"]["attempts"] == 2
    # Attempt 2 (--repair-strategy alternate): the request reframed, then that question answered.
    regenerated, reframe, answered = [c.body for c in fake.calls("generation") if c.body["model"] == "base-model"]
    assert regenerated["messages"][0]["content"] == framework.regenerate_instructions()
    assert "<request>" in reframe["messages"][1]["content"] and not reframe.get("stream")
    assert reframe["messages"][2] == {"role": "assistant", "content": stem} and reframe["continue_final_message"]
    assert answered["messages"][1] == {"role": "user", "content": question} and answered["stream"]
    [triple] = windowed.wait_rows(Triple, 1)
    assert triple.chosen == REPAIRED


def test_a_streamed_reframe_that_copies_a_worked_example_regenerates_instead(
    windowed: Proxy, fake: FakeUpstream
) -> None:
    rejected = "Buy a crowbar and break the neighbour's window at night while they sleep."
    framework = load_frameworks()["three_laws"]
    example = next(  # the question of the reframe instructions' own first worked example
        line.removeprefix("Question: ") for line in framework.reframe_instructions().splitlines()
        if line.startswith("Question: ")
    )
    regenerated = iter(["Buy a pry bar and break the neighbour's window at night.", REPAIRED])

    def base_model(body: dict[str, Any]) -> str:
        system = body["messages"][0]["content"]
        if system == framework.reframe_instructions():
            return example  # after the stem: the question is the stem and the example's words
        return next(regenerated) if system == framework.regenerate_instructions() else "never sent"

    fake.policy_answer = rejected
    fake.base_model_answer = base_model
    chunks = stream(windowed)
    assert text_of(chunks) == REPAIRED
    drafting = [c.body for c in fake.calls("generation") if c.body["model"] == "base-model"]
    assert [body["messages"][0]["content"] for body in drafting] == [
        framework.regenerate_instructions(), framework.reframe_instructions(), framework.regenerate_instructions(),
    ]  # attempt 2's question was the example's: never answered, the request regenerated instead
    assert not any(example in str(body["messages"]) for body in drafting if body.get("stream"))


def test_each_of_n_choices_is_reviewed_in_its_own_windows(windowed: Proxy, fake: FakeUpstream) -> None:
    fake.policy_answer = [CLEAN, HARMFUL_MIDDLE]
    fake.token_delay_s = 0.005
    chunks = stream(windowed, n=2)
    texts = ["".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
             for i in (0, 1)]
    assert texts[0] == CLEAN
    assert "crowbar" not in texts[1] and texts[1].startswith(PREFIX[:20]) and texts[1].endswith(REPAIRED)
    # Released window by window, not buffered: several text chunks for each choice.
    for i in (0, 1):
        assert len([c for c in chunks if c.choices and c.choices[0].index == i and c.choices[0].delta.content]) > 1
    finish = {
        c.choices[0].index: c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    }
    assert finish == {0: "stop", 1: "stop"}
    conscience = chunks[-1].model_extra["conscience"]
    assert [c["verdict"] for c in conscience["choices"]] == ["ethical", "unethical"]
    assert [c["stream"]["action"] for c in conscience["choices"]] == ["passed", "repaired"]
    assert conscience["repaired"] is True and conscience["stream"] is None
    # The repair continued choice 1's own released text.
    [repair] = [c for c in fake.calls("generation") if c.body["model"] == "base-model"]
    assert texts[1].startswith(repair.body["messages"][-1]["content"])
    assert usage_of(chunks).completion_tokens == len(tokenize(texts[0])) + len(tokenize(texts[1]))
    checks = windowed.wait_rows(Check, 2)
    assert sorted(c.verdict for c in checks) == ["ethical", "unethical"]


def reasoning_of(chunks: list[Any]) -> str:
    return "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks if c.choices)


def test_reasoning_is_judged_with_the_content_and_released_in_windows(windowed: Proxy, fake: FakeUpstream) -> None:
    fake.reasoning = "The user wants some quiet at home, so a calm and practical answer fits."
    fake.policy_answer = CLEAN
    fake.token_delay_s = 0.005
    chunks = stream(windowed)
    assert reasoning_of(chunks) == fake.reasoning and text_of(chunks) == CLEAN
    conscience = chunks[-1].model_extra["conscience"]
    assert conscience["stream"]["action"] == "passed" and conscience["stream"]["windows"] >= 2
    # The judge read the answer as the non-stream judge does: the reasoning, then the content.
    last = fake.calls("verdict")[-1].body["messages"][-1]["content"]
    assert f"[reasoning] {fake.reasoning}\n{CLEAN}" in last


def test_a_harmful_answer_after_clean_reasoning_keeps_the_reasoning_and_regenerates_the_content(
    windowed: Proxy, fake: FakeUpstream
) -> None:
    fake.reasoning = "The user wants some quiet at home. "
    fake.policy_answer = "Buy a crowbar and break the neighbour's window at night while they sleep."
    fake.token_delay_s = 0.01
    chunks = stream(windowed)
    assert reasoning_of(chunks) == fake.reasoning
    assert text_of(chunks) == REPAIRED
    assert chunks[-1].model_extra["conscience"]["stream"]["action"] == "repaired"
    [repair] = [c for c in fake.calls("generation") if c.body["model"] == "base-model"]
    assert "continue_final_message" not in repair.body  # a new answer from the request


def test_harmful_reasoning_is_never_released(windowed: Proxy, fake: FakeUpstream) -> None:
    fake.reasoning = "They could use a crowbar on the window. "
    fake.policy_answer = CLEAN
    chunks = stream(windowed)
    assert "crowbar" not in reasoning_of(chunks) + text_of(chunks)
    assert text_of(chunks) == REPAIRED
