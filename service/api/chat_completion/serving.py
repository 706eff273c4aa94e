"""Where the chat surface keeps its text, for the shared checked serving.

The judge sees everything a chat answer gives the client: the reasoning (vLLM's reasoning
parsers send it as `reasoning_content`, newer releases as `reasoning`), the content, a
`refusal`, the tool calls and the legacy `function_call`, names and arguments alike. Nothing
else of a message reaches the client while the conscience is on (`forwarded`): no `audio`, no
`annotations`, no field an upstream adds (service/api/forwarded_fields.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from service.api.forwarded_fields import forwarded_choice, only
from service.conscience.fencing import message_text
from service.core.backend import JSON, Backend
from service.errors import APIError

_REASONING_FIELDS = ("reasoning_content", "reasoning")
_TEXT_FIELDS = (*_REASONING_FIELDS, "content", "refusal")  # the string fields deltas extend
_CALL_FIELDS = frozenset({"index", "id", "type", "function"})
_FUNCTION_FIELDS = frozenset({"name", "arguments"})


def _render_call(kind: str, function: Any) -> str:
    function = function if isinstance(function, dict) else {}
    return f"[{kind}] {function.get('name') or '?'}({function.get('arguments') or ''})"


def _render_message(message: JSON) -> str:
    """The answer as the judge reads it: reasoning, text, then the calls it makes."""
    # Servers in transition send the reasoning under both names; it is judged once.
    reasoning = dict.fromkeys(
        message[key] for key in _REASONING_FIELDS if isinstance(message.get(key), str)
    )
    parts = [f"[reasoning] {text}" for text in reasoning]
    parts.append(message_text(message.get("content")))
    if isinstance(message.get("refusal"), str):
        parts.append(message["refusal"])
    for call in message.get("tool_calls") or []:
        parts.append(_render_call("tool call", call.get("function") if isinstance(call, dict) else None))
    if message.get("function_call"):
        parts.append(_render_call("function call", message["function_call"]))
    return "\n".join(p for p in parts if p)


def _forwarded_message(message: Any) -> Any:
    """What of a message (or delta) the client gets: its role and what `_render_message` reads,
    in the types it reads them (a reasoning that is not a string is not read, so not sent)."""
    if not isinstance(message, dict):
        return message
    kept: JSON = {key: message[key] for key in ("role", *_TEXT_FIELDS) if key in message}
    for key in _TEXT_FIELDS:
        if key != "content" and kept.get(key) is not None and not isinstance(kept[key], str):
            del kept[key]
    if isinstance(kept.get("content"), list):  # text parts are read; other parts (audio) are not
        kept["content"] = [
            {"type": "text", "text": part.get("text", "")}
            for part in kept["content"] if isinstance(part, dict) and part.get("type") == "text"
        ]
    if isinstance(message.get("tool_calls"), list):
        kept["tool_calls"] = [_forwarded_call(call) for call in message["tool_calls"] if isinstance(call, dict)]
    if isinstance(message.get("function_call"), dict):
        kept["function_call"] = only(message["function_call"], _FUNCTION_FIELDS)
    return kept


def _forwarded_call(call: JSON) -> JSON:
    kept = only(call, _CALL_FIELDS)
    if "function" in kept:
        kept["function"] = only(kept["function"], _FUNCTION_FIELDS)
    return kept


def _extend(target: JSON, function: Any) -> None:
    """Append a streamed function's name and arguments pieces to `target`'s."""
    if isinstance(function, dict):
        for key in ("name", "arguments"):
            target[key] = target.get(key, "") + str(function.get(key) or "")


class ChatSurface:
    endpoint: Literal["chat"] = "chat"

    def validate(self, body: JSON) -> None:
        """Any chat conversation can be judged (non-text parts are shown to the judge as
        placeholders), but not an answer in audio: it would be dropped (`forwarded`), so asking
        for one is refused."""
        modalities = body.get("modalities")
        if body.get("audio") is not None or (isinstance(modalities, list) and "audio" in modalities):
            raise APIError(
                400,
                "audio answers cannot be judged by the conscience: ask for text, or use conscience "
                "mode 'off'.",
                param="modalities" if body.get("audio") is None else "audio",
            )

    def prompt_count(self, body: JSON) -> int:
        return 1  # one conversation

    async def create(self, backend: Backend, body: JSON) -> JSON:
        return await backend.chat(body)

    def stream(self, backend: Backend, body: JSON) -> AsyncIterator[JSON]:
        return backend.chat_stream(body)

    def conversations(self, body: JSON, choice_count: int) -> list[list[JSON]]:
        return [body["messages"]] * choice_count

    def choice_text(self, choice: JSON) -> str:
        return _render_message(choice.get("message") or {})

    def forwarded(self, choice: JSON, body: JSON) -> JSON:
        return forwarded_choice(choice, body, {"message": _forwarded_message, "delta": _forwarded_message})

    def merge_deltas(self, chunk_choices: list[JSON]) -> JSON:
        """One choice's stream deltas as the non-streamed choice they add up to."""
        message: JSON = {}
        calls: dict[Any, JSON] = {}
        ids: dict[Any, str] = {}
        function_call: JSON = {}
        for chunk_choice in chunk_choices:
            delta = chunk_choice.get("delta") or {}
            for key in _TEXT_FIELDS:
                if isinstance(delta.get(key), str):
                    message[key] = message.get(key, "") + delta[key]
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    _extend(calls.setdefault(call.get("index", 0), {}), call.get("function"))
                    if call.get("id"):
                        ids[call.get("index", 0)] = call["id"]
            _extend(function_call, delta.get("function_call"))
        if calls:
            message["tool_calls"] = [
                {"id": ids.get(i), "type": "function", "function": calls[i]} for i in calls
            ]
        if function_call:
            message["function_call"] = function_call
        return {"message": message}

    def delta_text(self, chunk_choice: JSON) -> str | None:
        """A delta's content; None when it carries anything else the judge must read whole
        (reasoning, a refusal, a tool or function call)."""
        delta = chunk_choice.get("delta") or {}
        if any(delta.get(key) for key in (*_REASONING_FIELDS, "refusal", "tool_calls", "function_call")):
            return None
        content = delta.get("content")
        return content if isinstance(content, str) else ""

    def tool_calls(self, choice: JSON) -> list[JSON]:
        """The calls of a (merged) choice as {id, name, arguments}: tools and the legacy function."""
        message = choice.get("message") or {}
        calls = [
            {"id": call.get("id"), **(call.get("function") or {})}
            for call in message.get("tool_calls") or [] if isinstance(call, dict)
        ]
        if isinstance(message.get("function_call"), dict):
            calls.append({"id": None, **message["function_call"]})
        return calls

    def rewrite_tool_calls(self, choice: JSON, calls: list[JSON], finish_reason: str) -> None:
        """Replace the whole message by the repaired calls."""
        choice["message"] = {"role": "assistant", "content": None, "tool_calls": calls}
        choice["finish_reason"] = finish_reason
        choice["logprobs"] = None

    def tool_call_chunk(self, head: JSON, index: int, calls: list[JSON]) -> JSON:
        delta = {"role": "assistant", "tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]}
        return {
            **head,
            "object": "chat.completion.chunk",
            "choices": [{"index": index, "delta": delta, "finish_reason": None, "logprobs": None}],
        }

    def rewrite_choice(self, choice: JSON, text: str, finish_reason: str) -> None:
        """Replace the whole message: no rejected reasoning or call survives a repair."""
        choice["message"] = {"role": "assistant", "content": text}
        choice["finish_reason"] = finish_reason
        choice["logprobs"] = None

    def text_chunk(self, head: JSON, index: int, text: str, finish_reason: str | None) -> JSON:
        delta: JSON = {"role": "assistant", "content": text} if finish_reason is None else {}
        return {
            **head,
            "object": "chat.completion.chunk",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }
