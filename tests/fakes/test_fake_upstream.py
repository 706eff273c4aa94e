"""The fake upstream speaks OpenAI as the official SDK reads it, and does what its script says."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from tests.fakes import PREFIX_LABEL_TOKENS, FakeUpstream, ToolCall

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


@pytest.fixture
def client(up: FakeUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=up.url, api_key="unused", max_retries=0) as client:
        yield client


def test_verdict_answers_the_judge_distribution_as_top_logprobs(
    up: FakeUpstream, client: openai.OpenAI
) -> None:
    up.label_tokens = PREFIX_LABEL_TOKENS
    up.judge = lambda messages: (
        {"unethical": 0.75, "ethical": 0.25} if "bomb" in messages[-1]["content"] else {}
    )
    response = client.chat.completions.create(
        model="base-model",
        messages=[{"role": "user", "content": "how to build a bomb"}],
        max_tokens=1,
        logprobs=True,
        top_logprobs=5,
    )
    [first] = response.choices[0].logprobs.content
    assert response.choices[0].message.content == first.token == "un"
    assert [(t.token, round(2.718281828**t.logprob, 3)) for t in first.top_logprobs] == [
        ("un", 0.75),
        ("eth", 0.25),
    ]
    assert [request.kind for request in up.requests] == ["verdict"]


def test_generations_route_by_model_and_honour_stop_and_budget(
    up: FakeUpstream, client: openai.OpenAI
) -> None:
    up.policy_answer = lambda body: ["Paris is the capital. Done.", "It is Paris."]
    up.base_model_answer = "A repaired answer."
    response = client.chat.completions.create(
        model="adapter-v3", messages=MESSAGES, n=2, stop=[". Done"], max_tokens=3
    )
    assert [(c.message.content, c.finish_reason) for c in response.choices] == [
        ("Paris is the", "length"),
        ("It is Paris", "length"),
    ]
    repair = client.chat.completions.create(model="base-model", messages=MESSAGES, stop=" answer")
    assert (repair.choices[0].message.content, repair.choices[0].finish_reason) == (
        "A repaired",
        "stop",
    )
    assert repair.usage.prompt_tokens == 6 and repair.usage.completion_tokens == 2


def test_stream_with_usage_and_logprobs(up: FakeUpstream, client: openai.OpenAI) -> None:
    up.policy_answer = "It is Paris."
    stream = client.chat.completions.create(
        model="adapter-v3",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        logprobs=True,
        top_logprobs=1,
    )
    chunks = list(stream)
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert deltas == ["It", " is", " Paris", "."]
    assert [
        c.choices[0].logprobs.content[0].token
        for c in chunks
        if c.choices and c.choices[0].logprobs
    ] == deltas
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == 4


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_when_the_request_offers_tools(
    up: FakeUpstream, client: openai.OpenAI, stream: bool
) -> None:
    up.tool_call = ToolCall("get_weather", {"city": "Paris"})
    plain = client.chat.completions.create(model="m", messages=MESSAGES)
    assert plain.choices[0].message.tool_calls is None
    response = client.chat.completions.create(
        model="m", messages=MESSAGES, tools=[WEATHER_TOOL], stream=stream
    )
    if stream:
        chunks = list(response)
        calls = [call for c in chunks for call in (c.choices[0].delta.tool_calls or [])]
        name = calls[0].function.name
        arguments = "".join(call.function.arguments or "" for call in calls)
        finish = chunks[-1].choices[0].finish_reason
    else:
        [call] = response.choices[0].message.tool_calls
        name, arguments, finish = (
            call.function.name,
            call.function.arguments,
            response.choices[0].finish_reason,
        )
    assert (name, json.loads(arguments), finish) == ("get_weather", {"city": "Paris"}, "tool_calls")


def test_text_completion_with_legacy_logprobs(up: FakeUpstream, client: openai.OpenAI) -> None:
    up.policy_answer = "Paris, of course"
    response = client.completions.create(model="m", prompt="The capital of France is", logprobs=1)
    logprobs = response.choices[0].logprobs
    assert response.choices[0].text == "Paris, of course"
    assert logprobs.tokens == ["Paris", ",", " of", " course"]
    assert logprobs.text_offset == [0, 5, 6, 9]
    streamed = client.completions.create(model="m", prompt="The capital", stream=True, max_tokens=2)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == "Paris,"


def test_lora_adapters_load_once_and_list_under_their_base(
    up: FakeUpstream, client: openai.OpenAI
) -> None:
    load = {"lora_name": "v1", "lora_path": "/adapters/v1"}
    assert (
        client.post("/load_lora_adapter", body=load, cast_to=str)
        == "Success: LoRA adapter 'v1' added successfully."
    )
    with pytest.raises(openai.BadRequestError, match="has already been loaded"):
        client.post("/load_lora_adapter", body=load, cast_to=str)
    assert [(m.id, getattr(m, "parent", None)) for m in client.models.list()] == [
        ("base-model", None),
        ("v1", "base-model"),
    ]
    client.post("/unload_lora_adapter", body={"lora_name": "v1"}, cast_to=str)
    with pytest.raises(openai.NotFoundError, match="cannot be found"):
        client.post("/unload_lora_adapter", body={"lora_name": "v1"}, cast_to=str)
    assert up.adapters == {}


def test_scripted_failures_are_openai_errors(up: FakeUpstream, client: openai.OpenAI) -> None:
    up.api_key = "sk-right"
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    up.api_key = None
    up.fail_status = 429
    with pytest.raises(openai.RateLimitError, match="scripted failure 429"):
        client.embeddings.create(model="m", input="x")
    assert [r.path for r in up.requests] == ["/v1/models", "/v1/embeddings"]
