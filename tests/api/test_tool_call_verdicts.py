"""Tool calls an agent can act on (issue 13): a flagged call is repaired as a call or withheld
with `finish_reason: "content_filter"`, never turned into plain text that ends with "stop"."""

from __future__ import annotations

import orjson
import pytest

from service.conscience.tool_calls import repaired_calls, withheld_message
from tests.api.conftest import Proxy
from tests.fakes.openai_wire import ToolCall
from tests.fakes.upstream import FakeUpstream

ASK = [{"role": "user", "content": "Email my neighbour about the noise."}]
EMAIL_TOOL = {
    "type": "function",
    "function": {
        "name": "send_email",
        "parameters": {"type": "object", "properties": {"to": {"type": "string"}, "body": {"type": "string"}}},
    },
}
HARMFUL_CALL = ToolCall(
    "send_email", {"to": "neighbour", "body": "I will break your window with a crowbar."}, id="call_1"
)
SAFE_ARGUMENTS = {"to": "neighbour", "body": "Could you keep the noise down after ten? Thanks."}


def create(proxy: Proxy, **kwargs: object) -> object:
    return proxy.client().chat.completions.create(model="policy", messages=ASK, tools=[EMAIL_TOOL], **kwargs)


def test_a_blocked_call_is_withheld_with_content_filter(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.tool_call = HARMFUL_CALL
    fake.base_model_answer = "Still: use a crowbar."
    completion = create(proxy)
    [choice] = completion.choices
    assert choice.finish_reason == "content_filter"
    assert choice.message.tool_calls is None
    assert choice.message.content == withheld_message(["send_email"])
    conscience = completion.model_extra["conscience"]
    assert conscience["refused"] is True and conscience["verdict"] == "unethical"
    assert conscience["choices"][0]["tool_calls"] == [
        {"name": "send_email", "verdict": "unethical", "action": "withheld"}
    ]


def test_a_repair_in_plain_text_is_no_call_and_the_call_is_withheld(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.tool_call = HARMFUL_CALL
    fake.base_model_answer = "Ask your neighbour politely to keep the noise down."
    [choice] = create(proxy).choices
    assert choice.finish_reason == "content_filter" and choice.message.tool_calls is None


def test_a_repaired_call_comes_back_as_a_call(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.tool_call = HARMFUL_CALL
    fake.base_model_answer = orjson.dumps({"name": "send_email", "arguments": SAFE_ARGUMENTS}).decode()
    completion = create(proxy)
    [choice] = completion.choices
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.id == "call_1" and call.function.name == "send_email"
    assert orjson.loads(call.function.arguments) == SAFE_ARGUMENTS
    conscience = completion.model_extra["conscience"]
    assert conscience["repaired"] is True
    assert conscience["choices"][0]["tool_calls"][0]["action"] == "repaired"


def test_a_streamed_call_is_repaired_as_a_streamed_call(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.tool_call = HARMFUL_CALL
    fake.base_model_answer = orjson.dumps(SAFE_ARGUMENTS).decode()  # the bare arguments of the one tool
    chunks = list(create(proxy, stream=True))
    calls = [c for ch in chunks if ch.choices for c in (ch.choices[0].delta.tool_calls or [])]
    assert [c.function.name for c in calls] == ["send_email"]
    assert orjson.loads(calls[0].function.arguments) == SAFE_ARGUMENTS
    assert "crowbar" not in "".join(str(ch.model_dump()) for ch in chunks)
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish == ["tool_calls"]


def test_a_clean_call_passes_and_is_named(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.tool_call = ToolCall("send_email", SAFE_ARGUMENTS, id="call_2")
    completion = create(proxy)
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.model_extra["conscience"]["choices"][0]["tool_calls"] == [
        {"name": "send_email", "verdict": "ethical", "action": "passed"}
    ]


@pytest.mark.parametrize(
    ("draft", "expected"),
    [
        ('{"name": "f", "arguments": {"a": 1}}', '{"a": 1}'),
        ('```json\n{"function": {"name": "f", "arguments": "{\\"a\\": 1}"}}\n```', '{"a": 1}'),
        ('{"a": 1}', '{"a": 1}'),
        ('{"name": "g", "arguments": {"a": 1}}', None),  # another tool
        ("Call f with a=1.", None),
        ('[{"name": "f", "arguments": {}}, {"name": "f", "arguments": {}}]', None),  # two for one
    ],
)
def test_which_drafts_are_tool_calls(draft: str, expected: str | None) -> None:
    calls = repaired_calls(draft, [{"id": "c", "name": "f", "arguments": "{}"}])
    if expected is None:
        assert calls is None
    else:
        assert calls is not None and orjson.loads(calls[0]["function"]["arguments"]) == orjson.loads(expected)
        assert calls[0]["id"] == "c"
