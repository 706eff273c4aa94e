"""How the review commands (`conscience triples`, `conscience blocked`) print a logged case: a
list row's prompt on one line, and a case in full — its conversation and its discarded drafts."""

from __future__ import annotations

import orjson
import typer

from service.core.backend import JSON


def one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def last_user_text(prompt: list[JSON] | None) -> str:
    """The conversation's last user turn (non-text content as JSON)."""
    users = [m for m in prompt or [] if m.get("role") == "user"]
    content = users[-1].get("content", "") if users else ""
    return content if isinstance(content, str) else orjson.dumps(content).decode()


def echo_conversation(prompt: list[JSON] | None) -> None:
    for message in prompt or []:
        typer.echo(f"\n[{message.get('role')}]\n{message.get('content')}")


def echo_discarded_drafts(drafts: list[JSON] | None) -> None:
    for draft in drafts or []:
        typer.echo(f"\n--- discarded draft ({draft.get('reason')}, score {draft.get('score')}) ---")
        typer.echo(draft.get("text") or "(empty)")
