"""Quoting of user and model text for the judge and the repairer (DESIGN invariant 3).

Everything that came from a client or a model is escaped so it cannot close its fence, and
placed in a separate message after the framework's fixed instructions. The instructions tell
the judge that fenced text is data; the escaping makes sure the fence holds.
"""

from __future__ import annotations

import re
from typing import Any

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def quote(text: str) -> str:
    return text.translate(_ESCAPES)


def message_text(content: Any) -> str:
    """The text of an OpenAI message `content` (a string or a list of typed parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, dict):
                parts.append(f"[{part.get('type', 'attachment')}]")
        return "\n".join(parts)
    return str(content)


def render_conversation(conversation: list[dict[str, Any]]) -> str:
    """A conversation as role-labelled lines; a lone user turn is shown without a label."""
    if len(conversation) == 1 and conversation[0].get("role") == "user":
        return message_text(conversation[0].get("content"))
    lines = []
    for message in conversation:
        role = message.get("role", "user")
        lines.append(f"[{role}]: {message_text(message.get('content'))}")
    return "\n".join(lines)


def _clip_head(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " …[cut]"


def _clip_tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "[cut]… " + text[-limit:]


def fenced_case(conversation: list[dict[str, Any]], answer: str, *, max_chars: int) -> str:
    """The judged material: the request (its latest part kept) and the answer (its start kept)."""
    request = _clip_tail(render_conversation(conversation), max_chars)
    return (
        f"<request>\n{quote(request)}\n</request>\n"
        f"<answer>\n{quote(_clip_head(answer, max_chars))}\n</answer>"
    )


# A small repairer sometimes answers in the shape it was shown: the request's fence, then the
# new answer inside an answer fence. What the client should get is what is inside.
_ECHOED_FENCES = re.compile(
    r"\A\s*(?:<request>.*?</request>\s*)?<answer>\s*(?P<inner>.*?)\s*(?:</answer>\s*)?\Z", re.DOTALL
)


def unwrap_echoed_fences(text: str) -> str:
    """`text` without an echoed `<request>…</request>` and `<answer>` fence around it."""
    match = _ECHOED_FENCES.match(text)
    return match.group("inner") if match else text
