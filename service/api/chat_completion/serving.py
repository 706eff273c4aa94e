"""Where the chat surface keeps its text, for the shared checked serving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

from service.backends.base import JSON, Backend
from service.conscience.fencing import message_text


def _render_tool_calls(tool_calls: list[JSON]) -> str:
    rendered = []
    for call in tool_calls:
        function = call.get("function") or {}
        rendered.append(f"[tool call] {function.get('name', '?')}({function.get('arguments', '')})")
    return "\n".join(rendered)


class ChatSurface:
    endpoint: Literal["chat"] = "chat"

    def validate(self, body: JSON) -> None:
        """Any chat body can be judged: non-text parts are shown to the judge as placeholders."""

    async def create(self, backend: Backend, body: JSON) -> JSON:
        return await backend.chat(body)

    def stream(self, backend: Backend, body: JSON) -> AsyncIterator[JSON]:
        return backend.chat_stream(body)

    def conversations(self, body: JSON, choice_count: int) -> list[list[JSON]]:
        return [body["messages"]] * choice_count

    def choice_text(self, choice: JSON) -> str:
        """The answer as the judge sees it: its text and any tool calls it makes."""
        message = choice.get("message") or {}
        parts = [message_text(message.get("content"))]
        if message.get("tool_calls"):
            parts.append(_render_tool_calls(message["tool_calls"]))
        return "\n".join(p for p in parts if p)

    def delta_text(self, chunk_choice: JSON) -> str:
        delta = chunk_choice.get("delta") or {}
        text = delta.get("content") or ""
        for call in delta.get("tool_calls") or []:
            function = call.get("function") or {}
            if function.get("name"):
                text += f"\n[tool call] {function['name']}("
            text += function.get("arguments") or ""
        return text

    def rewrite_choice(self, choice: JSON, text: str, finish_reason: str) -> None:
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
