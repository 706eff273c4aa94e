"""The OpenAI wire bodies the fake upstream answers with, built from already-decided choices.

Shapes follow OpenAI's API reference (and vLLM where OpenAI says nothing): chat completions and
their chunks, legacy text completions, logprobs in both the chat form (`content` entries with
`top_logprobs`) and the legacy form (`tokens`/`token_logprobs`/`top_logprobs`/`text_offset`).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

JSON = dict[str, Any]

# Word-ish tokens that keep their leading whitespace, so joining them gives the text back.
_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s]+)|\s+")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the fake answers with; `arguments` go on the wire as a JSON string."""

    name: str
    arguments: dict[str, Any]
    id: str = "call_fake_0"


@dataclass(slots=True)
class Choice:
    """One decided answer; `alternatives[i]` ranks token i's (token, probability), best first."""

    tokens: list[str]
    finish_reason: str
    alternatives: list[list[tuple[str, float]]]
    tool_call: ToolCall | None = None
    reasoning: str | None = None  # sent as `reasoning_content`, before the answer
    # Fields sent besides the text: on the message (a stream's first delta), and on the choice
    # (every chunk's choice), e.g. `audio`, `annotations`, vLLM's `token_ids`.
    message_extras: JSON = field(default_factory=dict)
    choice_extras: JSON = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def _logprob(probability: float) -> float:
    return math.log(probability) if probability > 0 else -9999.0


def _token_entry(token: str, probability: float) -> JSON:
    return {"token": token, "logprob": _logprob(probability), "bytes": list(token.encode())}


def chat_logprobs(choice: Choice, top_n: int, tokens: slice = slice(None)) -> JSON:
    entries = []
    for token, ranking in zip(choice.tokens[tokens], choice.alternatives[tokens], strict=True):
        chosen = dict(ranking).get(token, 1.0)
        entry = _token_entry(token, chosen)
        entry["top_logprobs"] = [_token_entry(alt, p) for alt, p in ranking[:top_n]]
        entries.append(entry)
    return {"content": entries}


def legacy_logprobs(
    choice: Choice, top_n: int, tokens: slice = slice(None), offset: int = 0
) -> JSON:
    picked = choice.tokens[tokens]
    rankings = choice.alternatives[tokens]
    offsets = []
    for token in picked:
        offsets.append(offset)
        offset += len(token)
    return {
        "tokens": picked,
        "token_logprobs": [
            _logprob(dict(r).get(t, 1.0)) for t, r in zip(picked, rankings, strict=True)
        ],
        "top_logprobs": [{alt: _logprob(p) for alt, p in r[:top_n]} for r in rankings],
        "text_offset": offsets,
    }


def usage(prompt_tokens: int, choices: list[Choice]) -> JSON:
    completion_tokens = sum(len(choice.tokens) for choice in choices)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _tool_call_json(call: ToolCall) -> JSON:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": orjson.dumps(call.arguments).decode()},
    }


def _chat_message(choice: Choice) -> JSON:
    if choice.tool_call is not None:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [_tool_call_json(choice.tool_call)],
        }
    else:
        message = {"role": "assistant", "content": choice.text}
    if choice.reasoning is not None:
        message["reasoning_content"] = choice.reasoning
    return {**message, **choice.message_extras}


def chat_completion(
    model: str, choices: list[Choice], prompt_tokens: int, top_n: int | None
) -> JSON:
    """`top_n` is None when the request asked for no logprobs (or the server gives none)."""
    return {
        "id": f"chatcmpl-fake-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": index,
                "message": _chat_message(choice),
                "logprobs": None if top_n is None else chat_logprobs(choice, top_n),
                "finish_reason": choice.finish_reason,
                **choice.choice_extras,
            }
            for index, choice in enumerate(choices)
        ],
        "usage": usage(prompt_tokens, choices),
    }


def chat_chunks(
    model: str,
    choices: list[Choice],
    prompt_tokens: int,
    top_n: int | None,
    include_usage: bool,
    continuous_usage: bool = False,
) -> Iterator[JSON]:
    """Role chunk, one chunk per token (or the tool call), finish chunk; per choice, then usage.
    `continuous_usage` (vLLM's `continuous_usage_stats`): every chunk has the usage so far."""
    head = {
        "id": f"chatcmpl-fake-{time.monotonic_ns()}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    if include_usage:
        head["usage"] = None

    generated = 0

    def chunk(
        index: int, delta: JSON, logprobs: JSON | None = None, finish: str | None = None
    ) -> JSON:
        nonlocal generated
        extras = choices[index].choice_extras
        body: JSON = {
            **head,
            "choices": [
                {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish, **extras}
            ],
        }
        if include_usage and continuous_usage:
            generated += 1 if delta.get("content") else 0
            body["usage"] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": generated,
                "total_tokens": prompt_tokens + generated,
            }
        return body

    for index, choice in enumerate(choices):
        yield chunk(index, {"role": "assistant", "content": "", **choice.message_extras})
        if choice.reasoning is not None:
            yield chunk(index, {"reasoning_content": choice.reasoning})
        if choice.tool_call is not None:
            call = _tool_call_json(choice.tool_call)
            arguments = call["function"]["arguments"]
            call["function"]["arguments"] = ""
            yield chunk(index, {"tool_calls": [{"index": 0, **call}]})
            yield chunk(index, {"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]})
        else:
            for position, token in enumerate(choice.tokens):
                logprobs = (
                    None
                    if top_n is None
                    else chat_logprobs(choice, top_n, slice(position, position + 1))
                )
                yield chunk(index, {"content": token}, logprobs)
        yield chunk(index, {}, finish=choice.finish_reason)
    if include_usage:
        yield {**head, "choices": [], "usage": usage(prompt_tokens, choices)}


def text_completion(
    model: str, choices: list[Choice], prompt_tokens: int, top_n: int | None
) -> JSON:
    return {
        "id": f"cmpl-fake-{time.monotonic_ns()}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": index,
                "text": choice.text,
                "logprobs": None if top_n is None else legacy_logprobs(choice, top_n),
                "finish_reason": choice.finish_reason,
                **choice.choice_extras,
            }
            for index, choice in enumerate(choices)
        ],
        "usage": usage(prompt_tokens, choices),
    }


def text_completion_chunks(
    model: str,
    choices: list[Choice],
    prompt_tokens: int,
    top_n: int | None,
    include_usage: bool,
) -> Iterator[JSON]:
    head = {
        "id": f"cmpl-fake-{time.monotonic_ns()}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
    }
    if include_usage:
        head["usage"] = None
    for index, choice in enumerate(choices):
        offset = 0
        for position, token in enumerate(choice.tokens):
            logprobs = (
                None
                if top_n is None
                else legacy_logprobs(choice, top_n, slice(position, position + 1), offset)
            )
            offset += len(token)
            yield {
                **head,
                "choices": [
                    {"index": index, "text": token, "logprobs": logprobs, "finish_reason": None,
                     **choice.choice_extras}
                ],
            }
        yield {
            **head,
            "choices": [
                {
                    "index": index,
                    "text": "",
                    "logprobs": None,
                    "finish_reason": choice.finish_reason,
                    **choice.choice_extras,
                }
            ],
        }
    if include_usage:
        yield {**head, "choices": [], "usage": usage(prompt_tokens, choices)}


def error(message: str, error_type: str, *, param: str | None = None, code: Any = None) -> JSON:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}
