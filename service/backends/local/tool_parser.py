"""Tool calls in the hermes format, as Qwen2.5's chat template asks the model to write them.

The model answers a call as `<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>` (one
block per call, possibly after some text); vLLM's `hermes` tool parser reads the same format.
A block whose JSON does not parse, or that names no function, is no call: then the whole answer
stays text, as vLLM leaves it, so the client sees what the model wrote.

Small Qwen2.5 models (the demo's 0.5B Coder among them) often drop the tags and answer with the
bare object, `{"name": …, "arguments": {…}}` (or a list of them, or that in a ```json fence).
Such an answer is read as calls too, but only when it is nothing else and names offered tools,
so a JSON answer to a question about JSON stays text.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
_FENCE = re.compile(r"\A\s*```(?:json)?\s*(?P<body>.*?)\s*```\s*\Z", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ParsedCall:
    name: str
    arguments: str  # JSON text of an object, as OpenAI sends `function.arguments`

    def openai(self, call_id: str) -> dict[str, object]:
        return {"id": call_id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True, slots=True)
class ParsedAnswer:
    content: str | None  # the text before the first call; None when there is none
    calls: list[ParsedCall]


def new_call_id() -> str:
    return f"chatcmpl-tool-{uuid.uuid4().hex}"  # vLLM's prefix


def parse_block(body: str) -> ParsedCall | None:
    """One block's inside (`{"name": …, "arguments": …}`) as a call, or None when it is none."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string already
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ParsedCall(data["name"], json.dumps(arguments, ensure_ascii=False))


def _bare_calls(text: str, tool_names: Collection[str]) -> list[ParsedCall]:
    """The answer as untagged calls of offered tools, or [] when it is anything else."""
    fenced = _FENCE.match(text)
    try:
        data = json.loads(fenced.group("body") if fenced else text)
    except json.JSONDecodeError:
        return []
    items = data if isinstance(data, list) and data else [data]
    if not all(isinstance(item, dict) and item.get("name") in tool_names and "arguments" in item for item in items):
        return []
    calls = [parse_block(json.dumps(item)) for item in items]
    return [call for call in calls if call is not None] if all(calls) else []


def parse_answer(text: str, tool_names: Collection[str] = ()) -> ParsedAnswer:
    """The calls of a whole answer. An unclosed last block (the answer ended without
    `</tool_call>`) still counts when its JSON is whole, as when generation stops on it.
    `tool_names`: the offered tools, which an untagged answer must name to be calls."""
    start = text.find(OPEN)
    if start == -1:
        bare = _bare_calls(text, tool_names) if tool_names else []
        return ParsedAnswer(None if bare else text, bare)
    calls: list[ParsedCall] = []
    rest = text[start:]
    while rest.startswith(OPEN):
        end = rest.find(CLOSE)
        body = rest[len(OPEN) : end if end != -1 else len(rest)]
        call = parse_block(body.strip())
        if call is None:
            return ParsedAnswer(text, [])
        calls.append(call)
        rest = "" if end == -1 else rest[end + len(CLOSE) :].lstrip()
    if rest.strip():  # text after the calls: not the format; keep the answer as the model wrote it
        return ParsedAnswer(text, [])
    content = text[:start].strip()
    return ParsedAnswer(content or None, calls)


class StreamedCalls:
    """Splits a streamed answer into content and calls as text arrives.

    Content before the first `<tool_call>` is released at once (except a tail that may begin the
    tag); from the tag on, text is held until the end, then parsed as a whole (`finish`), so a
    streamed answer reads as the same answer not streamed. An answer that opens with `{`, `[` or
    a fence may be untagged calls: it is held whole too, and is text only if it is not.
    """

    def __init__(self, tool_names: Collection[str] = ()) -> None:
        self._tool_names = tool_names
        self._pending = ""
        self._in_calls = False
        self._opened = False  # the answer's first visible character has been seen

    def push(self, text: str) -> str:
        """Add text; returns the content that is now final."""
        self._pending += text
        if not self._opened and self._pending.strip():
            self._opened = True
            self._in_calls = self._pending.lstrip()[0] in "{[`"
        if self._in_calls or not self._opened:
            return ""
        start = self._pending.find(OPEN)
        if start != -1:
            content, self._pending = self._pending[:start], self._pending[start:]
            self._in_calls = True
            return content
        keep = _tag_prefix_length(self._pending)
        content = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(content) :]
        return content

    def finish(self, *, calls_allowed: bool = True) -> tuple[str, list[ParsedCall]]:
        """The end of the answer: (content still held, calls). `calls_allowed=False` (the answer
        was cut off by the token limit): what was held is text, whatever it looks like."""
        held, self._pending = self._pending, ""
        if not self._in_calls or not calls_allowed:
            return held, []
        parsed = parse_answer(held, self._tool_names)
        if not parsed.calls:
            return held, []
        return parsed.content or "", parsed.calls


def _tag_prefix_length(text: str) -> int:
    """Length of the longest tail of `text` that begins `<tool_call>`."""
    for size in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if text.endswith(OPEN[:size]):
            return size
    return 0
