"""Tools on the embedded engine (issue 28): Qwen2.5's template shows the tools, the hermes
`<tool_call>` blocks the model writes come back as OpenAI tool calls — whole or as streamed
deltas — and through `conscience serve --backend local` the call is judged like an upstream's.

The answers come from a tiny model trained (seconds) to answer one weather question with one
call (tests/fixtures/tiny_model.py: build_scripted_model), so nothing in the engine is faked.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from service.backends.local.backend import LocalBackend
from service.backends.local.prompts import chat_prompt_ids
from service.backends.local.tool_parser import StreamedCalls, parse_answer
from service.core.backend import BackendError
from tests.local.conftest import local_settings
from tests.processes import free_port, wait_until_up

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


# --- the hermes parser, on text ------------------------------------------------------------


def test_a_call_block_is_a_call_and_text_before_it_is_content() -> None:
    parsed = parse_answer("Let me look.\n" + CALL_TEXT)
    assert parsed.content == "Let me look."
    [call] = parsed.calls
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}


def test_two_blocks_are_two_calls_and_an_unclosed_whole_one_counts() -> None:
    text = CALL_TEXT + '\n<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}'
    parsed = parse_answer(text)
    assert parsed.content is None
    assert [json.loads(call.arguments)["city"] for call in parsed.calls] == ["Paris", "Oslo"]


@pytest.mark.parametrize(
    "text",
    [
        "It is sunny in Paris.",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par',  # cut off
        "<tool_call>\nget_weather(city='Paris')\n</tool_call>",  # not JSON
        '<tool_call>\n{"arguments": {}}\n</tool_call>',  # no name
        CALL_TEXT + "\nAnd then I will tell you.",  # text after the calls: not the format
    ],
)
def test_what_is_no_call_stays_the_text_the_model_wrote(text: str) -> None:
    parsed = parse_answer(text)
    assert parsed.calls == [] and parsed.content == text


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',  # what the demo model writes
        '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
        '[{"name": "get_weather", "arguments": {"city": "Paris"}}]',
    ],
)
def test_an_untagged_call_of_an_offered_tool_is_a_call(text: str) -> None:
    parsed = parse_answer(text, ["get_weather"])
    assert parsed.content is None and [call.name for call in parsed.calls] == ["get_weather"]


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "send_email", "arguments": {}}',  # a tool not offered
        '{"name": "get_weather", "city": "Paris"}',  # no arguments: a JSON answer, not a call
        'Call {"name": "get_weather", "arguments": {}}',
    ],
)
def test_untagged_json_that_is_not_exactly_a_call_stays_text(text: str) -> None:
    parsed = parse_answer(text, ["get_weather"])
    assert parsed.calls == [] and parsed.content == text


def test_a_streamed_answer_that_opens_as_json_is_held_and_read_whole() -> None:
    calls = StreamedCalls(["get_weather"])
    assert [calls.push(piece) for piece in ['{"name": ', '"get_weather", "arguments": {"city": "Paris"}}']] == ["", ""]
    assert calls.finish()[1][0].name == "get_weather"
    text = StreamedCalls(["get_weather"])
    assert text.push('{"a": ') == "" and text.push("1}") == ""
    assert text.finish() == ('{"a": 1}', [])


def test_streamed_text_is_released_up_to_a_possible_tag_and_the_calls_at_the_end() -> None:
    stream = StreamedCalls()
    released = [stream.push(piece) for piece in ["Let me ", "look.<tool", "_call>\n{\"name\": ", '"get_weather", ']]
    released.append(stream.push('"arguments": {"city": "Paris"}}\n</tool_call>'))
    assert released == ["Let me ", "look.", "", "", ""]
    held, [call] = stream.finish()
    assert held == "" and call.name == "get_weather"


def test_a_streamed_answer_that_only_looked_like_a_tag_is_text() -> None:
    stream = StreamedCalls()
    assert stream.push("a <tool") == "a "
    assert stream.push("box> b") == "<toolbox> b"
    assert stream.finish() == ("", [])


# --- the engine -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weather_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer

    from tests.fixtures.tiny_model import QWEN25_TOOLS_TEMPLATE, build_scripted_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = QWEN25_TOOLS_TEMPLATE
    prompt = tokenizer.apply_chat_template(ASK, tools=[WEATHER_TOOL], tokenize=False, add_generation_prompt=True)
    return build_scripted_model(
        tiny_model_dir, tmp_path_factory.mktemp("weather-model"), prompt_text=prompt, answer=CALL_TEXT
    )


@pytest.fixture(scope="module")
def weather_backend(weather_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBackend]:
    local = LocalBackend.from_settings(local_settings(weather_model, tmp_path_factory.mktemp("cache")))
    yield local
    asyncio.run(local.aclose())


def weather_body(**fields: Any) -> dict[str, Any]:
    return {"messages": ASK, "tools": [WEATHER_TOOL], "temperature": 0, "max_tokens": 96, **fields}


async def test_a_tool_call_comes_back_as_an_openai_tool_call(weather_backend: LocalBackend) -> None:
    response = await weather_backend.chat(weather_body())

    [choice] = response["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    [call] = message["tool_calls"]
    assert call["id"].startswith("chatcmpl-tool-") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


async def test_a_streamed_tool_call_comes_as_tool_call_deltas(weather_backend: LocalBackend) -> None:
    chunks = [c async for c in weather_backend.chat_stream(weather_body(stream=True))]

    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert not any(d.get("content") for d in deltas)  # the call is never sent as text
    pieces = [piece for d in deltas for piece in d.get("tool_calls", [])]
    assert pieces[0]["index"] == 0 and pieces[0]["type"] == "function"
    assert pieces[0]["id"].startswith("chatcmpl-tool-") and pieces[0]["function"] == {"name": "get_weather"}
    assert json.loads("".join(p["function"].get("arguments", "") for p in pieces)) == {"city": "Paris"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]] == ["tool_calls"]


async def test_tool_choice_none_hides_the_tools_and_parses_nothing(weather_backend: LocalBackend) -> None:
    tokenizer = weather_backend.engine.loaded.tokenizer
    with_tools = chat_prompt_ids(tokenizer, weather_body(), tools=[WEATHER_TOOL])
    without = chat_prompt_ids(tokenizer, weather_body(tool_choice="none"))
    assert "get_weather" in tokenizer.decode(with_tools) and "get_weather" not in tokenizer.decode(without)

    response = await weather_backend.chat(weather_body(tool_choice="none", max_tokens=8))
    [choice] = response["choices"]
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] in ("stop", "length")


async def test_a_named_tool_choice_starts_the_answer_with_that_call(weather_backend: LocalBackend) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    response = await weather_backend.chat(weather_body(tool_choice=named, max_tokens=4))
    # The model continues after the forced start; cut off at 4 tokens the call is text, started.
    [choice] = response["choices"]
    assert choice["message"]["content"].startswith('<tool_call>\n{"name": "get_weather", "arguments": ')
    assert choice["finish_reason"] == "length"


async def test_the_conversation_after_a_call_renders_with_the_tool_answer(weather_backend: LocalBackend) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    messages = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"}]
    tokenizer = weather_backend.engine.loaded.tokenizer
    text = tokenizer.decode(chat_prompt_ids(tokenizer, {"messages": messages}, tools=[WEATHER_TOOL]))
    # The arguments are written as the JSON object they are, not as a quoted string.
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in text
    assert "<tool_response>\n18 C, sunny\n</tool_response>" in text


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"tools": [{"type": "retrieval"}]}, "tools[0]", "function"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name", "name"),
        ({"tool_choice": {"type": "function", "function": {"name": "send_email"}}}, "tool_choice", "not among"),
        ({"tool_choice": "always"}, "tool_choice", "tool_choice must be"),
        ({"tools": None, "tool_choice": "required"}, "tool_choice", "needs tools"),
    ],
)
async def test_bad_tools_are_a_clear_400(
    weather_backend: LocalBackend, fields: dict[str, Any], param: str, words: str
) -> None:
    with pytest.raises(BackendError) as raised:
        await weather_backend.chat(weather_body(**fields))
    assert raised.value.status_code == 400 and raised.value.param == param and words in str(raised.value)


async def test_a_template_without_tools_refuses_them_instead_of_dropping_them(backend: LocalBackend) -> None:
    with pytest.raises(BackendError) as raised:
        await backend.chat(weather_body())
    assert raised.value.status_code == 400 and "does not render tools" in str(raised.value)


# --- through the proxy ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_serve_local_returns_a_judged_tool_call(weather_model: Path, tmp_path: Path, stream: bool) -> None:
    port = free_port()
    command = [
        sys.executable, "-m", "conscience_cli", "serve", "--backend", "local", "--local-model", str(weather_model),
        "--port", str(port), "--threshold", "1.0", "--local-threads", "1",
        "--db-url", f"sqlite+aiosqlite:///{tmp_path / 'conscience.db'}", "--spool-path", str(tmp_path / "spool.jsonl"),
    ]
    env = {**os.environ, "CONSCIENCE_MODEL_CACHE_DIR": str(tmp_path / "cache")}
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/readyz", timeout_s=90)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        [model] = [m.id for m in client.models.list().data]
        kwargs: dict[str, Any] = {"model": model, "messages": ASK, "tools": [WEATHER_TOOL],
                                  "temperature": 0, "max_tokens": 96}
        if stream:
            chunks = list(client.chat.completions.create(**kwargs, stream=True))
            pieces = [c for ch in chunks if ch.choices for c in (ch.choices[0].delta.tool_calls or [])]
            assert [c.function.name for c in pieces if c.function.name] == ["get_weather"]
            arguments = "".join(c.function.arguments or "" for c in pieces)
            finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
            conscience = next(ch.model_extra["conscience"] for ch in chunks if (ch.model_extra or {}).get("conscience"))
        else:
            completion = client.chat.completions.create(**kwargs)
            [call] = completion.choices[0].message.tool_calls
            assert call.function.name == "get_weather"
            arguments, finish = call.function.arguments, [completion.choices[0].finish_reason]
            conscience = completion.model_extra["conscience"]
        assert json.loads(arguments) == {"city": "Paris"} and finish == ["tool_calls"]
        [judged] = conscience["choices"][0]["tool_calls"]
        assert judged["name"] == "get_weather" and judged["action"] == "passed"
        assert judged["verdict"] in ("ethical", "neutral")
    finally:
        server.terminate()
        server.wait(30)
