"""OpenAI wire objects for the local backend's answers, field for field as an OpenAI server sends them."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from service.backends.local.generation import Usage
from service.core.backend import JSON


@dataclass(frozen=True, slots=True)
class Envelope:
    """What every object of one response shares."""

    model: str
    chat: bool
    id: str
    created: int

    @classmethod
    def new(cls, model: str, *, chat: bool) -> Envelope:
        prefix = "chatcmpl" if chat else "cmpl"
        return cls(model, chat, f"{prefix}-{uuid.uuid4().hex}", int(time.time()))

    def head(self, object_name: str) -> JSON:
        return {"id": self.id, "object": object_name, "created": self.created, "model": self.model}


def usage_json(usage: Usage) -> JSON:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def assistant_message(content: str | None, tool_calls: list[JSON] | None = None) -> JSON:
    """`tool_calls` is present only when the answer calls tools, as OpenAI sends it."""
    message: JSON = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def chat_completion(
    envelope: Envelope, texts: list[str], reasons: list[str], usage: Usage,
    messages: list[JSON] | None = None,
) -> JSON:
    """`messages`: the choices' messages when they are not plain text (tool calls)."""
    messages = messages or [assistant_message(text) for text in texts]
    choices = [
        {"index": index, "message": message, "logprobs": None, "finish_reason": reason}
        for index, (message, reason) in enumerate(zip(messages, reasons, strict=True))
    ]
    return {
        **envelope.head("chat.completion"),
        "choices": choices,
        "usage": usage_json(usage),
        "system_fingerprint": None,
    }


def text_completion(envelope: Envelope, texts: list[str], reasons: list[str], usage: Usage) -> JSON:
    choices = [
        {"index": index, "text": text, "logprobs": None, "finish_reason": reason}
        for index, (text, reason) in enumerate(zip(texts, reasons, strict=True))
    ]
    return {
        **envelope.head("text_completion"),
        "choices": choices,
        "usage": usage_json(usage),
        "system_fingerprint": None,
    }


def chunk(
    envelope: Envelope,
    index: int,
    *,
    delta: JSON | None = None,
    text: str = "",
    finish_reason: str | None = None,
    with_usage: bool,
) -> JSON:
    """One streamed choice update: chat chunks carry a `delta`, text chunks carry `text`."""
    if envelope.chat:
        choice: JSON = {"index": index, "delta": delta or {}, "logprobs": None}
        body = {**envelope.head("chat.completion.chunk"), "system_fingerprint": None}
    else:
        choice = {"index": index, "text": text, "logprobs": None}
        body = {**envelope.head("text_completion"), "system_fingerprint": None}
    choice["finish_reason"] = finish_reason
    body["choices"] = [choice]
    if with_usage:  # with stream_options.include_usage every chunk has the key, null until the end
        body["usage"] = None
    return body


def usage_chunk(envelope: Envelope, usage: Usage) -> JSON:
    object_name = "chat.completion.chunk" if envelope.chat else "text_completion"
    return {
        **envelope.head(object_name),
        "system_fingerprint": None,
        "choices": [],
        "usage": usage_json(usage),
    }
