"""Issue 26: the client gets nothing the judge did not read — fields an upstream adds to a choice
or its message (`audio` and its transcript, `annotations`, vLLM's `token_ids`) are not forwarded
on any checked path; mode off forwards the upstream's answer as it is."""

from __future__ import annotations

import httpx
import openai
import pytest

from service.api.chat_completion.serving import ChatSurface
from service.api.completion.serving import CompletionSurface
from tests.api.conftest import ASK_BODY, HARMFUL, REPAIRED, Proxy, ProxyFactory
from tests.fakes.upstream import FakeUpstream

ASK = ASK_BODY["messages"]
# What an upstream may add besides the answer's text; the fake judge flags "crowbar" wherever it
# reads it, so every one of these would be flagged if it were judged.
AUDIO = {"id": "audio_1", "data": "UklGRg==", "expires_at": 0, "transcript": HARMFUL}
ANNOTATIONS = [{"type": "url_citation", "url_citation": {
    "url": "https://example.com/crowbar", "title": HARMFUL, "start_index": 0, "end_index": 4}}]
CHOICE_EXTRAS = {"token_ids": [7, 8, 9], "stop_reason": HARMFUL, "hidden": HARMFUL}
STREAMS = [
    pytest.param({"enforce_streaming": "buffered"}, id="enforce-buffered"),
    pytest.param({}, id="enforce-windowed"),
    pytest.param({"mode": "monitor"}, id="monitor"),
]


@pytest.fixture
def talkative(fake: FakeUpstream) -> FakeUpstream:
    """A harmless answer that carries harmful text in every field the judge never reads."""
    fake.policy_answer = "Talk to them."
    fake.message_extras = {"audio": AUDIO, "annotations": ANNOTATIONS, "secret": HARMFUL}
    fake.choice_extras = CHOICE_EXTRAS
    return fake


def test_a_chat_answer_is_sent_without_the_fields_the_judge_did_not_read(
    proxy: Proxy, talkative: FakeUpstream
) -> None:
    completion = proxy.client().chat.completions.create(model="policy", messages=ASK)
    [choice] = completion.choices
    assert choice.message.content == "Talk to them." and choice.finish_reason == "stop"
    assert choice.message.audio is None and choice.message.annotations is None
    assert "crowbar" not in completion.model_dump_json() and "token_ids" not in (choice.model_extra or {})
    assert completion.model_extra["conscience"]["verdict"] == "ethical"


def test_a_repaired_chat_answer_keeps_nothing_of_the_original(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.policy_answer = HARMFUL
    fake.choice_extras = {"token_ids": [1, 2, 3]}  # the harmful original's tokens
    completion = proxy.client().chat.completions.create(model="policy", messages=ASK)
    assert completion.choices[0].message.content == REPAIRED
    assert "token_ids" not in (completion.choices[0].model_extra or {})


@pytest.mark.parametrize("settings", STREAMS)
def test_a_streamed_chat_answer_is_sent_without_the_fields_the_judge_did_not_read(
    start_proxy: ProxyFactory, talkative: FakeUpstream, settings: dict
) -> None:
    chunks = list(start_proxy(**settings).client().chat.completions.create(model="policy", messages=ASK, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Talk to them."
    assert not any("crowbar" in chunk.model_dump_json() for chunk in chunks)
    assert not any("audio" in (c.choices[0].delta.model_extra or {}) for c in chunks if c.choices)
    assert chunks[-1].model_extra["conscience"]["verdict"] in ("ethical", "pending")


@pytest.mark.parametrize("stream", [False, True])
def test_a_text_completion_is_sent_without_the_fields_the_judge_did_not_read(
    start_proxy: ProxyFactory, talkative: FakeUpstream, stream: bool
) -> None:
    client = start_proxy().client()
    if stream:  # a batch of prompts: buffered, judged, replayed
        chunks = list(client.completions.create(model="policy", prompt=["Hi", "Hello"], stream=True))
        assert not any("crowbar" in chunk.model_dump_json() for chunk in chunks)
        assert {c.choices[0].text for c in chunks if c.choices} >= {"Talk", " to"}
        return
    completion = client.completions.create(model="policy", prompt="My neighbour is loud.")
    assert completion.choices[0].text == "Talk to them."
    assert "crowbar" not in completion.model_dump_json() and "token_ids" not in completion.model_dump_json()


@pytest.mark.parametrize("stream", [False, True])
def test_a_response_carries_nothing_the_judge_did_not_read(
    proxy: Proxy, talkative: FakeUpstream, stream: bool
) -> None:
    body = {"model": "policy", "input": "My neighbour is loud.", "stream": stream}
    answer = httpx.post(f"{proxy.url}/responses", json=body, timeout=30)
    assert answer.status_code == 200 and "Talk" in answer.text
    assert "crowbar" not in answer.text and "audio" not in answer.text


def test_mode_off_forwards_the_upstream_answer_as_it_is(start_proxy: ProxyFactory, talkative: FakeUpstream) -> None:
    completion = start_proxy(mode="off").client().chat.completions.create(model="policy", messages=ASK)
    message = completion.choices[0].message
    assert message.audio is not None and message.audio.transcript == HARMFUL
    assert completion.choices[0].model_extra["token_ids"] == [7, 8, 9]


def test_asking_for_an_audio_answer_is_refused_while_the_conscience_is_on(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        proxy.client().chat.completions.create(
            model="policy", messages=ASK, modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"}
        )
    assert caught.value.body["param"] == "audio" and "audio" in caught.value.body["message"]
    assert fake.calls("generation") == []


def test_what_is_forwarded_is_what_the_judge_reads() -> None:
    chat = ChatSurface()
    message = {
        "role": "assistant", "content": [{"type": "text", "text": "Hi", "x": 1}, {"type": "input_audio"}],
        "reasoning_content": {"not": "a string"}, "refusal": None,
        "tool_calls": [{"index": 0, "id": "c", "type": "function", "extra": 1,
                        "function": {"name": "f", "arguments": "{}", "extra": 2}}, "junk"],
        "function_call": {"name": "g", "arguments": "{}", "extra": 3}, "audio": AUDIO,
    }
    choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None, "stop_reason": 42}
    forwarded = chat.forwarded(choice, {})
    assert forwarded == {"index": 0, "finish_reason": "stop", "logprobs": None, "stop_reason": 42, "message": {
        "role": "assistant", "content": [{"type": "text", "text": "Hi"}], "refusal": None,
        "tool_calls": [{"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        "function_call": {"name": "g", "arguments": "{}"},
    }}
    assert chat.choice_text(forwarded) == "Hi\n[tool call] f({})\n[function call] g({})"  # what the judge reads
    text = CompletionSurface()
    stopped = {"index": 1, "text": "a", "stop_reason": "\n\n", "token_ids": [1]}
    assert text.forwarded(stopped, {"stop": ["\n\n"]}) == {"index": 1, "text": "a", "stop_reason": "\n\n"}
    assert text.forwarded(stopped, {"stop": "END"}) == {"index": 1, "text": "a"}
