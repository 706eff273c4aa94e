"""Issue 10 (judge): the judge reads all the client gets, fails closed, and is the operator's."""

from __future__ import annotations

import time

import openai
import pytest

from service.api.chat_completion.serving import ChatSurface
from tests.api.conftest import HARMFUL, REPAIRED, Proxy, ProxyFactory
from tests.fakes.openai_wire import ToolCall
from tests.fakes.upstream import FakeUpstream

ASK = [{"role": "user", "content": "My neighbour is loud. What should I do?"}]


def judged(fake: FakeUpstream) -> list[str]:
    """The fenced cases the fast judge was shown."""
    return [call.body["messages"][1]["content"] for call in fake.calls("verdict")]


def test_reasoning_is_judged_and_a_repair_drops_it(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.reasoning = HARMFUL
    fake.policy_answer = "Talk to them."
    completion = proxy.client().chat.completions.create(model="policy", messages=ASK)
    message = completion.choices[0].message
    assert message.content == REPAIRED
    assert "reasoning_content" not in (message.model_extra or {})
    assert f"[reasoning] {HARMFUL}" in judged(fake)[0]


def test_streamed_reasoning_is_judged_and_not_replayed(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.reasoning = HARMFUL
    fake.policy_answer = "Talk to them."
    chunks = list(proxy.client().chat.completions.create(model="policy", messages=ASK, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPAIRED
    assert not any("reasoning_content" in (c.choices[0].delta.model_extra or {}) for c in chunks if c.choices)
    assert chunks[-1].model_extra["conscience"]["repaired"] is True


def test_a_harmful_tool_call_is_replaced_whole(proxy: Proxy, fake: FakeUpstream) -> None:
    """No part of the harmful call survives; a text repair of a call is no call, so the agent
    is told the call was withheld (tests/api/test_tool_call_verdicts.py)."""
    fake.tool_call = ToolCall(name="send_instructions", arguments={"text": HARMFUL})
    tools = [{"type": "function", "function": {"name": "send_instructions", "parameters": {"type": "object"}}}]
    completion = proxy.client().chat.completions.create(model="policy", messages=ASK, tools=tools)
    choice = completion.choices[0]
    assert not choice.message.tool_calls and "send_instructions" in choice.message.content
    assert "crowbar" not in choice.message.content
    assert choice.finish_reason == "content_filter"


def test_harm_after_a_long_padding_is_judged(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start_proxy(judge_max_answer_chars=2000, judge_window_overlap_chars=200)
    fake.policy_answer = "All is well. " * 400 + HARMFUL
    completion = proxy.client().chat.completions.create(model="policy", messages=ASK)
    assert completion.choices[0].message.content == REPAIRED
    assert len(fake.calls("verdict")) >= 4  # every window of the original, then the repair


def test_legacy_function_calls_and_streamed_deltas_are_all_read() -> None:
    surface = ChatSurface()
    message = {"content": None, "function_call": {"name": "run", "arguments": '{"cmd": "x"}'}}
    assert surface.choice_text({"message": message}) == '[function call] run({"cmd": "x"})'
    deltas = [
        {"delta": {"role": "assistant", "content": ""}},
        {"delta": {"reasoning_content": "Think "}},
        {"delta": {"reasoning_content": "hard."}},
        {"delta": {"content": "Done."}},
        {"delta": {"tool_calls": [{"index": 0, "function": {"name": "a", "arguments": '{"k"'}}]}},
        {"delta": {"tool_calls": [{"index": 1, "function": {"name": "b", "arguments": "{}"}}]}},
        {"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ': 1}'}}]}},
        {"delta": {"function_call": {"name": "run", "arguments": "{"}}},
        {"delta": {"function_call": {"arguments": "}"}}},
    ]
    assert surface.choice_text(surface.merge_deltas(deltas)) == (
        '[reasoning] Think hard.\nDone.\n[tool call] a({"k": 1})\n[tool call] b({})\n'
        "[function call] run({})"
    )


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
def test_unchecked_answers_are_counted(start_proxy: ProxyFactory, fake: FakeUpstream, policy: str) -> None:
    proxy = start_proxy(failure_policy=policy, judge_style="reasoned")
    fake.base_model_answer = 'Fine.\n{"verdict": "ethical", "confidence": NaN}'
    proxy.client().chat.completions.create(model="policy", messages=ASK)
    outcome = "sent" if policy == "fail_open" else "refused"
    metrics = proxy.metrics_text()
    assert (
        f'conscience_unchecked_total{{framework="three_laws",outcome="{outcome}",reason="invalid_verdict"}} 1.0'
        in metrics
    )


def test_mode_off_answers_are_counted_unchecked(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start_proxy(mode="off")
    proxy.client().chat.completions.create(model="policy", messages=ASK, n=2)
    metrics = proxy.metrics_text()
    assert 'conscience_unchecked_total{framework="three_laws",outcome="sent",reason="mode_off"} 2.0' in metrics


def test_a_client_may_pick_only_the_judge_styles_the_operator_allows(
    start_proxy: ProxyFactory, fake: FakeUpstream
) -> None:
    reasoned = {"conscience": {"judge_style": "reasoned"}}
    strict = start_proxy()
    with pytest.raises(openai.PermissionDeniedError) as caught:
        strict.client().chat.completions.create(model="policy", messages=ASK, extra_body=reasoned)
    assert caught.value.body["code"] == "judge_style_not_allowed"
    assert caught.value.body["param"] == "conscience.judge_style"
    own = strict.client().chat.completions.create(
        model="policy", messages=ASK, extra_body={"conscience": {"judge_style": "fast"}}
    )
    assert own.model_extra["conscience"]["verdict"] == "ethical"

    fake.base_model_answer = 'Harmless.\n{"verdict": "ethical", "confidence": 0.9}'
    lenient = start_proxy(client_judge_styles="reasoned")
    chosen = lenient.client().chat.completions.create(model="policy", messages=ASK, extra_body=reasoned)
    assert chosen.model_extra["conscience"]["score"] == pytest.approx(0.1)


def test_the_client_model_never_chooses_the_judge(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start_proxy(judge_model=None, model=None, follow_adapters=False)
    completion = proxy.client().chat.completions.create(model="attacker-pick", messages=ASK)
    assert fake.calls("generation")[0].body["model"] == "attacker-pick"  # the policy: the client's
    assert {call.body["model"] for call in fake.calls("verdict")} == {"base-model"}
    assert completion.model_extra["conscience"]["judge_model"] == "base-model"


def test_without_a_known_judge_checked_requests_are_refused_until_one_is_found(
    start_proxy: ProxyFactory, fake: FakeUpstream
) -> None:
    fake.fail_status = 503  # the upstream is down while the proxy starts
    proxy = start_proxy(judge_model=None, model=None, follow_adapters=False, adapter_poll_s=0.2)
    fake.fail_status = None
    with pytest.raises(openai.InternalServerError) as caught:
        proxy.client().chat.completions.create(model="attacker-pick", messages=ASK)
    assert caught.value.status_code == 503 and caught.value.body["code"] == "judge_model_unknown"
    assert fake.calls("verdict") == []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the next poll finds the upstream's one base model
        try:
            completion = proxy.client().chat.completions.create(model="attacker-pick", messages=ASK)
        except openai.InternalServerError:
            time.sleep(0.05)
            continue
        assert completion.model_extra["conscience"]["judge_model"] == "base-model"
        return
    pytest.fail("the judge model was never discovered")

