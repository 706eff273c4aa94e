"""Conversations as training sees them: role and text only, for both pipelines' chat templates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Message = dict[str, str]

# Chat templates of open models know system/user/assistant; OpenAI's newer "developer" role is
# the system prompt under another name.
_ROLE_ALIASES = {"developer": "system"}


def training_text(content: Any) -> str:
    """OpenAI content is a string or a list of parts; only the text parts reach training (the
    judge, by contrast, sees every part: service/conscience/fencing.py `message_text`)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = [part for part in content if isinstance(part, dict) and part.get("type") == "text"]
    return "".join(part.get("text", "") for part in texts)


def clean_messages(messages: Sequence[dict[str, Any]]) -> list[Message]:
    """Role and text only: chat templates choke on tool-call fields and image parts."""
    return [
        {
            "role": _ROLE_ALIASES.get(message["role"], message["role"]),
            "content": training_text(message.get("content")),
        }
        for message in messages
    ]
