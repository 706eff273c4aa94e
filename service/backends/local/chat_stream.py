"""The chunks of one streamed chat choice: its role, its text, its tool calls, its end.

With tools, text is read through `StreamedCalls`: content before a `<tool_call>` streams as it
comes; the calls are sent when the answer ends, as vLLM sends them — one delta with the call's
id, type and name, then one with its arguments — and the choice ends with `"tool_calls"`.
"""

from __future__ import annotations

from service.backends.local.generation import ChoiceDelta
from service.backends.local.openai_shapes import Envelope, chunk
from service.backends.local.tool_parser import ParsedCall, StreamedCalls, new_call_id, parse_answer
from service.backends.local.tools import ToolUse
from service.core.backend import JSON

TOOL_CALLS_FINISH = "tool_calls"


def final_message(text: str, reason: str, tools: ToolUse | None) -> tuple[str | None, list[JSON] | None, str]:
    """A whole answer as (content, OpenAI tool calls or None, finish reason)."""
    if tools is None:
        return text, None, reason
    written = tools.forced_start + text
    parsed = parse_answer(written, tools.names)
    if not parsed.calls or reason != "stop":  # a call cut off by the token limit is no call
        return written, None, reason
    return parsed.content, [call.openai(new_call_id()) for call in parsed.calls], TOOL_CALLS_FINISH


class ChatChoiceStream:
    def __init__(self, envelope: Envelope, index: int, *, tools: ToolUse | None, with_usage: bool) -> None:
        self._envelope = envelope
        self._index = index
        self._with_usage = with_usage
        self._calls = StreamedCalls(tools.names) if tools is not None else None
        self._forced_start = tools.forced_start if tools is not None else ""
        self._started = False

    def _chunk(self, delta: JSON | None = None, finish_reason: str | None = None) -> JSON:
        return chunk(self._envelope, self._index, delta=delta, finish_reason=finish_reason,
                     with_usage=self._with_usage)

    def updates(self, delta: ChoiceDelta) -> list[JSON]:
        out = []
        text = delta.text
        if not self._started:
            self._started = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
            text = self._forced_start + text
        if self._calls is not None:
            text = self._calls.push(text)
        if text:
            out.append(self._chunk({"content": text}))
        if delta.finish_reason:
            out += self._end(delta.finish_reason)
        return out

    def _end(self, reason: str) -> list[JSON]:
        if self._calls is None:
            return [self._chunk(finish_reason=reason)]
        # A call cut off by the token limit is no call: what was written is text.
        held, calls = self._calls.finish(calls_allowed=reason == "stop")
        out = [self._chunk({"content": held})] if held else []
        for position, call in enumerate(calls):
            out += [self._chunk({"tool_calls": [piece]}) for piece in _call_pieces(position, call)]
        if calls:
            reason = TOOL_CALLS_FINISH
        out.append(self._chunk(finish_reason=reason))
        return out


def _call_pieces(position: int, call: ParsedCall) -> list[JSON]:
    return [
        {"index": position, "id": new_call_id(), "type": "function", "function": {"name": call.name}},
        {"index": position, "function": {"arguments": call.arguments}},
    ]

