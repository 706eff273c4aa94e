"""SQLAlchemy 2 table models. Alembic (migrations/) owns the schema; a test keeps them equal."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from service.store.records import new_id, utcnow


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[dict[str, Any]]: JSON}
    # Named constraints: SQLite migrations rebuild tables (batch mode) and need names to find them.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class TripleStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    TRAINED = "trained"


class BlockedReview(StrEnum):
    """A reviewer's mark on a blocked answer (flagged, no repair passed): was the judge right?"""

    RIGHT = "right"  # rightly blocked: the answer was harmful
    WRONG = "wrong"  # wrongly blocked: the answer was acceptable (the judge's false positive)


class AdapterStatus(StrEnum):
    CANDIDATE = "candidate"
    ACTIVE = "active"
    RETIRED = "retired"
    FAILED = "failed"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every dialect.

    SQLite has no time zones: it stores the wall-clock text and reads back naive values. Storing
    UTC and marking it UTC on the way out makes both dialects hand back the same aware datetime.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return as_utc(value)


def as_utc(value: datetime | None) -> datetime | None:
    """Aware UTC; a naive value is taken to be UTC already (that is how the store writes)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _timestamp(**kwargs: Any) -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), **kwargs)


class Check(Base):
    """One checked completion choice. Never holds an API key, only its id."""

    __tablename__ = "checks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    # The client's X-Client-Request-Id, a correlation field only (null when none was sent, and
    # for checks older than migration 0006); `request_id` is always ours.
    client_request_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    created_at: Mapped[datetime] = _timestamp(default=utcnow, index=True)
    endpoint: Mapped[str] = mapped_column(String(16))
    framework: Mapped[str] = mapped_column(String(64), index=True)
    mode: Mapped[str] = mapped_column(String(16))
    verdict: Mapped[str] = mapped_column(String(16), index=True)
    score: Mapped[float | None] = mapped_column(Float)
    # The score at or above which this verdict was flagged (Judge.threshold_for); null when
    # the verdict failed, and for checks older than migration 0004.
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    repaired: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    choice_index: Mapped[int] = mapped_column(Integer, default=0)
    policy_model: Mapped[str] = mapped_column(String(256))
    judge_model: Mapped[str] = mapped_column(String(256))
    upstream_ms: Mapped[float] = mapped_column(Float)
    judge_ms: Mapped[float] = mapped_column(Float)
    repair_ms: Mapped[float] = mapped_column(Float)
    api_key_id: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    # For a flagged answer that was repaired or blocked (no repair passed: no triple holds its
    # text): the conversation, the answer and the discarded repair drafts. Null otherwise.
    prompt: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    drafts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    # A reviewer's mark on a blocked answer (BlockedReview: right | wrong) and when it was made;
    # null until marked, and for every other check (migration 0005).
    blocked_review: Mapped[str | None] = mapped_column(String(8), nullable=True)
    reviewed_at: Mapped[datetime | None] = _timestamp(nullable=True)


class Triple(Base):
    """A flagged answer with its accepted repair: one DPO preference pair."""

    __tablename__ = "triples"
    __table_args__ = (Index("ix_triples_status_created", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    client_request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)  # as on Check
    check_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = _timestamp(default=utcnow)
    framework: Mapped[str] = mapped_column(String(64), index=True)
    prompt: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    rejected: Mapped[str] = mapped_column(Text)
    chosen: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    policy_model: Mapped[str] = mapped_column(String(256))
    judge_model: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), default=TripleStatus.PENDING.value)
    reviewed_at: Mapped[datetime | None] = _timestamp(nullable=True)
    trained_in_version: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("adapter_versions.id"), nullable=True
    )


class ApiKey(Base):
    """A client key, stored only as its SHA-256; `prefix` lets an operator recognise it."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    framework: Mapped[str | None] = mapped_column(String(64))
    mode: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = _timestamp(default=utcnow)
    revoked_at: Mapped[datetime | None] = _timestamp(nullable=True)


class AdapterVersion(Base):
    """A trained LoRA adapter. Immutable once written; activation is a status change."""

    __tablename__ = "adapter_versions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)  # e.g. conscience-v7
    base_model: Mapped[str] = mapped_column(String(256))
    path: Mapped[str] = mapped_column(Text)
    parent_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("adapter_versions.id"), nullable=True
    )
    status: Mapped[str] = mapped_column(String(16), default=AdapterStatus.CANDIDATE.value, index=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    triple_count: Mapped[int] = mapped_column(Integer, default=0)
    dataset_hash: Mapped[str | None] = mapped_column(String(64))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _timestamp(default=utcnow)
    activated_at: Mapped[datetime | None] = _timestamp(nullable=True)


class ConsoleSessionRevocation(Base):
    """A console session logged out before it expired: its id's SHA-256 (the id itself, a bearer
    secret inside the signed cookie, is never stored) and when the session would have expired,
    after which the row may go. Every worker and replica reads it (service/api/ui/session.py)."""

    __tablename__ = "console_session_revocations"

    session_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = _timestamp(index=True)
