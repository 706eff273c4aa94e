"""Tool calls an agent can act on: what becomes of a flagged answer that calls tools.

The judge reads every call's name and arguments (service/api/chat_completion/serving.py). When
an answer with tool calls is flagged, the agent must learn that its call did not go through,
never get a silent text answer with `finish_reason: "stop"`:

- repaired: the repair draft is a tool call for the same tool (JSON: `{"name": …, "arguments":
  {…}}`, an OpenAI `{"function": {…}}` call, a list of them, or — when one tool was called —
  the bare arguments object) with arguments the judge passed: it is returned as a tool call,
  `finish_reason: "tool_calls"`, under the original call's id;
- withheld: anything else (no repair passed, or the repair is plain text): the message says in
  one sentence that the call was withheld, `finish_reason: "content_filter"`, and the
  `conscience` object names each tool with the verdict.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from service.conscience.outcome import UNCHECKED, Review
from service.conscience.policy import REFUSED_FINISH, finish_reason, replaces_answer
from service.core.backend import JSON

TOOL_CALLS_FINISH = "tool_calls"
_FENCE = re.compile(r"\A\s*```(?:json)?\s*(?P<body>.*?)\s*```\s*\Z", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ToolCallOutcome:
    action: Literal["repaired", "withheld"]
    finish_reason: str
    text: str | None = None  # withheld: the sentence the message says
    tool_calls: list[JSON] | None = None  # repaired: OpenAI tool calls


def withheld_message(names: list[str], *, judged: bool = True) -> str:
    """One sentence: which call was withheld, and why (flagged, or the judge could not check it)."""
    listed = ", ".join(f"`{name}`" for name in names) or "a tool"
    noun = "call" if len(names) <= 1 else "calls"
    why = "the conscience judged it unethical" if judged else "the conscience could not check it"
    return f"The {noun} to {listed} was withheld and not made: {why}."


def _function(item: Any) -> tuple[str | None, Any] | None:
    if not isinstance(item, dict):
        return None
    if isinstance(item.get("function"), dict):
        item = item["function"]
    if "name" in item and "arguments" in item:
        return item.get("name"), item.get("arguments")
    return None


def repaired_calls(draft: str, original: list[JSON]) -> list[JSON] | None:
    """The draft as tool calls for the same tools, or None when it is not one."""
    match = _FENCE.match(draft)
    try:
        data = json.loads(match.group("body") if match else draft)
    except (json.JSONDecodeError, TypeError):
        return None
    names = [call.get("name") for call in original]
    items = data if isinstance(data, list) else [data]
    parsed = [_function(item) for item in items]
    if all(p is None for p in parsed) and len(original) == 1 and isinstance(data, dict):
        parsed = [(names[0], data)]  # the bare arguments of the one tool called
    if not parsed or any(p is None for p in parsed) or len(parsed) != len(original):
        return None
    calls = []
    for (name, arguments), call in zip(parsed, original, strict=True):  # type: ignore[misc]
        if name != call.get("name"):
            return None
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        calls.append({"id": call.get("id"), "type": "function", "function": {"name": name, "arguments": arguments}})
    return calls


def tool_call_outcome(review: Review, original: list[JSON]) -> ToolCallOutcome:
    """What the client gets for a flagged answer that called `original` ({id, name, arguments})."""
    if review.repaired:
        calls = repaired_calls(review.final_text, original)
        if calls is not None:
            return ToolCallOutcome("repaired", TOOL_CALLS_FINISH, tool_calls=calls)
    names = list(dict.fromkeys(str(call.get("name") or "?") for call in original))
    text = withheld_message(names, judged=review.verdict != UNCHECKED)
    return ToolCallOutcome("withheld", REFUSED_FINISH, text=text)


@dataclass(frozen=True, slots=True)
class Replacement:
    """What replaces a choice the conscience did not pass."""

    finish_reason: str
    text: str = ""
    tool_calls: list[JSON] | None = None  # a repaired tool call: sent as calls, not text
    call_action: Literal["repaired", "withheld"] | None = None  # what became of the choice's calls

    @property
    def withheld(self) -> bool:
        return self.call_action == "withheld"


def replacement(review: Review, calls: list[JSON]) -> Replacement | None:
    """What replaces a choice after `review` (None: it stands); `calls`: the tools it calls (as
    {id, name, arguments}). A flagged tool call is repaired as a call or withheld, never turned
    into plain text."""
    if not replaces_answer(review):
        return None
    if calls:
        outcome = tool_call_outcome(review, calls)
        return Replacement(outcome.finish_reason, outcome.text or "", outcome.tool_calls, outcome.action)
    return Replacement(finish_reason(review), review.final_text)
