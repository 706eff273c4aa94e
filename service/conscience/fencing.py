"""Quoting of user and model text for the judge and the repairer (docs/architecture.md, invariant 3).

Everything that came from a client or a model is escaped so it cannot close its fence, and
placed in a separate message after the framework's fixed instructions. The instructions tell
the judge that fenced text is data; the escaping makes sure the fence holds.

Form is ours, never the client's: in a conversation of several messages each one is shown in
its own `<message role="…">` block, and since `<` and `>` inside any text are escaped, no
message can close its block or open one with a forged role. Roles and attachment type names
are shown only from fixed lists.
"""

from __future__ import annotations

import re
from typing import Any

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Content part types that carry no text the judge can read; anything else is an "attachment".
_ATTACHMENTS = frozenset(
    {"image_url", "input_audio", "audio_url", "video_url", "file", "image_embeds"}
)
CUT_HEAD = "[cut]… "  # marks text left out before what is shown
CUT_TAIL = " …[cut]"  # marks text left out after what is shown


def quote(text: str) -> str:
    return text.translate(_ESCAPES)


def message_text(content: Any) -> str:
    """The text of an OpenAI message `content` (a string or a list of typed parts); a part
    without text is shown as its type in brackets, from a fixed list."""
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
                kind = part.get("type")
                parts.append(f"[{kind if kind in _ATTACHMENTS else 'attachment'}]")
        return "\n".join(parts)
    return str(content)


def render_request(conversation: list[dict[str, Any]]) -> str:
    """The conversation, quoted: a lone user turn as its bare text (the form the judge was
    measured with), else one `<message role="…">` block per message."""
    if len(conversation) == 1 and conversation[0].get("role") == "user":
        return quote(message_text(conversation[0].get("content")))
    blocks = []
    for message in conversation:
        role = message.get("role")
        role = role if role in _ROLES else "unknown"
        blocks.append(
            f'<message role="{role}">\n{quote(message_text(message.get("content")))}\n</message>'
        )
    return "\n".join(blocks)


def _clip_head(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + CUT_TAIL


def _clip_tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else CUT_HEAD + text[-limit:]


def answer_windows(answer: str, *, size: int, overlap: int) -> list[str]:
    """All of `answer` in windows of at most `size` characters, each one starting `overlap`
    characters before the previous one ended, so that any passage up to `overlap` characters
    long lies whole inside one window. Cut ends are marked. Requires 0 <= overlap < size."""
    if not 0 <= overlap < size:
        raise ValueError(f"window overlap {overlap} must be at least 0 and below the size {size}")
    windows = []
    start = 0
    while True:
        end = min(start + size, len(answer))
        marked_head = CUT_HEAD if start else ""
        marked_tail = CUT_TAIL if end < len(answer) else ""
        windows.append(marked_head + answer[start:end] + marked_tail)
        if end == len(answer):
            return windows
        start = end - overlap


def fenced_window(conversation: list[dict[str, Any]], window: str, *, max_chars: int) -> str:
    """The judged material: the request (its latest `max_chars` kept) and `window`, a part of
    the answer (from `answer_windows`) shown as given."""
    request = _clip_tail(render_request(conversation), max_chars)
    return f"<request>\n{request}\n</request>\n<answer>\n{quote(window)}\n</answer>"


def fenced_request(conversation: list[dict[str, Any]], *, max_chars: int) -> str:
    """The request alone (its latest `max_chars` kept), for a repair drafted afresh: the rejected
    answer is not shown, so a small model cannot copy it."""
    return f"<request>\n{_clip_tail(render_request(conversation), max_chars)}\n</request>"


def fenced_case(conversation: list[dict[str, Any]], answer: str, *, max_chars: int) -> str:
    """The request (its latest part kept) and the answer (its start kept), for the repairer."""
    return fenced_window(conversation, _clip_head(answer, max_chars), max_chars=max_chars)


# A small repairer sometimes answers in the shape it was shown: the request's fence, then the
# new answer inside an answer fence. What the client should get is what is inside.
_ECHOED_FENCES = re.compile(
    r"\A\s*(?:<request>.*?</request>\s*)?<answer>\s*(?P<inner>.*?)\s*(?:</answer>\s*)?\Z", re.DOTALL
)


def unwrap_echoed_fences(text: str) -> str:
    """`text` without an echoed `<request>…</request>` and `<answer>` fence around it."""
    match = _ECHOED_FENCES.match(text)
    return match.group("inner") if match else text
