"""What the request path hands to the store: plain dataclasses, no SQLAlchemy.

The pipeline builds these; the background writer persists them (or spools them while the
database is down). Ids are generated on the request path so that a replayed spool entry can be
inserted idempotently.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import TypeAdapter


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class CheckRecord:
    """One checked completion choice."""

    request_id: str
    endpoint: Literal["chat", "completions", "responses", "check", "moderations"]
    framework: str
    mode: str
    verdict: str  # ethical | neutral | unethical | unchecked
    score: float | None
    repaired: bool
    attempts: int
    policy_model: str
    judge_model: str
    upstream_ms: float
    judge_ms: float
    repair_ms: float
    choice_index: int = 0
    api_key_id: str | None = None
    error: str | None = None
    threshold: float | None = None  # what the verdict was flagged at; None: the verdict failed
    # Set when the answer was flagged and repaired or blocked (no repair passed): see models.Check.
    prompt: list[dict[str, Any]] | None = None
    answer: str | None = None
    drafts: list[dict[str, Any]] | None = None
    client_request_id: str | None = None  # the client's X-Client-Request-Id; see models.Check
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)

    kind: Literal["check"] = "check"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data


@dataclass(slots=True)
class TripleRecord:
    """A flagged answer and its repair: one DPO preference pair (status starts `pending`)."""

    request_id: str
    check_id: str
    framework: str
    prompt: list[dict[str, Any]]  # the conversation as OpenAI messages
    rejected: str
    chosen: str
    details: dict[str, Any]  # verdicts and scores of the original and the accepted repair
    policy_model: str
    judge_model: str
    client_request_id: str | None = None  # the client's X-Client-Request-Id; see models.Check
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)

    kind: Literal["triple"] = "triple"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data


Record = CheckRecord | TripleRecord


_SHAPES: dict[str, TypeAdapter[Any]] = {
    "check": TypeAdapter(CheckRecord), "triple": TypeAdapter(TripleRecord),
}


def record_from_json(data: object) -> Record:
    """Inverse of `to_json`, for spool replay; raises ValueError for anything else.

    Every field is validated against its type (pydantic, lax: "3" is 3): a line that parses
    but holds a value no driver can bind (a list for a number, say) is unreadable, not a record
    that would stall the replay.
    """
    if not isinstance(data, dict) or not isinstance(data.get("created_at"), str):
        raise ValueError(f"not a record: {str(data)[:80]}")
    shape = _SHAPES.get(data.get("kind"))
    if shape is None:
        raise ValueError(f"unknown record kind {data.get('kind')!r}")
    record: Record = shape.validate_python(
        {**data, "created_at": datetime.fromisoformat(data["created_at"])}
    )
    return record
