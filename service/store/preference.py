"""The one shape of a preference pair, and conversations as training sees them.

`preference_record` is TRL's conversational preference format — what the admin export
(`GET /admin/triples/export`), `conscience triples export` and the nightly trainer's dataset all
write, so an exported file is exactly what the trainer trains on. Its prompt is the conversation
as training sees it (`clean_messages`: role and text only, for the chat templates of both
training pipelines).
"""

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


def preference_record(prompt: Sequence[dict[str, Any]], chosen: str, rejected: str) -> dict[str, Any]:
    """One preference pair: `prompt` as training sees it, then each answer as one assistant
    message. Idempotent on its prompt (a cleaned prompt cleans to itself)."""
    return {
        "prompt": clean_messages(prompt),
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }
