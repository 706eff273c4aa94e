"""Async reads and reviews over the store, for the admin API and console, the CLI and the trainer.

Functions take an `AsyncSession` and never commit: the caller owns the transaction
(`async with db.sessions.begin() as session:`).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Integer, case, cast, delete, func, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.keys import generate_key, visible_prefix
from service.store.models import (
    ApiKey,
    BlockedReview,
    Check,
    ConsoleSessionRevocation,
    Triple,
    TripleStatus,
    as_utc,
)
from service.store.records import utcnow

Bucket = Literal["hour", "day"]


class UnknownTriples(LookupError):
    def __init__(self, ids: Sequence[str]) -> None:
        super().__init__(f"unknown triple id(s): {', '.join(ids)}")
        self.ids = list(ids)


class UnknownBlocked(LookupError):
    """Ids that name no blocked answer (no check, or a check that was not blocked)."""

    def __init__(self, ids: Sequence[str]) -> None:
        super().__init__(f"unknown blocked answer id(s): {', '.join(ids)}")
        self.ids = list(ids)


# Which blocked answers by their review: not yet marked, or marked right / wrong (None: all).
BlockedReviewState = Literal["unreviewed", "right", "wrong"]


@dataclass(frozen=True, slots=True)
class TripleFilter:
    """Which triples a selection reads: the one filter of the admin API, the console, the CLI
    and the trainer. Times compare as UTC (a naive one means UTC)."""

    status: TripleStatus | tuple[TripleStatus, ...] | None = None  # one, or any of several
    framework: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    min_score: float | None = None  # the flagged answer's score, inclusive
    max_score: float | None = None  # inclusive
    untrained: bool = False  # only triples no adapter version was trained on

    def conditions(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if isinstance(self.status, tuple):
            conditions.append(Triple.status.in_([status.value for status in self.status]))
        elif self.status is not None:
            conditions.append(Triple.status == self.status.value)
        if self.untrained:
            conditions.append(Triple.trained_in_version.is_(None))
        if self.framework is not None:
            conditions.append(Triple.framework == self.framework)
        if self.since is not None:
            conditions.append(Triple.created_at >= as_utc(self.since))
        if self.until is not None:
            conditions.append(Triple.created_at < as_utc(self.until))
        score = Triple.details[("rejected_verdict", "score")].as_float()
        if self.min_score is not None:
            conditions.append(score >= self.min_score)
        if self.max_score is not None:
            conditions.append(score <= self.max_score)
        return conditions


@dataclass(frozen=True, slots=True)
class CheckFilter:
    framework: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive

    def conditions(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if self.framework is not None:
            conditions.append(Check.framework == self.framework)
        if self.since is not None:
            conditions.append(Check.created_at >= self.since)
        if self.until is not None:
            conditions.append(Check.created_at < self.until)
        return conditions


@dataclass(frozen=True, slots=True)
class VerdictCount:
    bucket_start: datetime
    framework: str
    verdict: str
    count: int


# --- triples ---------------------------------------------------------------------------------


async def list_triples(
    session: AsyncSession, where: TripleFilter, *, limit: int, offset: int = 0
) -> Sequence[Triple]:
    """Newest first."""
    query = (
        select(Triple).where(*where.conditions())
        .order_by(Triple.created_at.desc(), Triple.id.desc()).limit(limit).offset(offset)
    )
    return (await session.scalars(query)).all()


async def count_triples(session: AsyncSession, where: TripleFilter) -> int:
    query = select(func.count()).select_from(Triple).where(*where.conditions())
    return (await session.scalar(query)) or 0


async def get_triple(session: AsyncSession, triple_id: str) -> Triple | None:
    return await session.get(Triple, triple_id)


async def set_triple_status(
    session: AsyncSession, ids: Sequence[str], status: TripleStatus
) -> Sequence[Triple]:
    """Review triples all or nothing: `UnknownTriples` (and no change) if any id is missing."""
    return await _review_all(session, Triple, ids, UnknownTriples, status=status.value)


async def iter_triples(
    session: AsyncSession, where: TripleFilter, *, page_size: int = 500
) -> AsyncIterator[Triple]:
    """Every matching triple, oldest first, read a page at a time (keyset paging)."""
    async for triple in _oldest_first(session, select(Triple).where(*where.conditions()), Triple, page_size):
        yield triple


async def _review_all(
    session: AsyncSession, model: Any, ids: Sequence[str], unknown: type[LookupError],
    *conditions: ColumnElement[bool], **marks: str,
) -> Sequence[Any]:
    """Set `marks` and `reviewed_at` on every row of `model` named by `ids` (and matching
    `conditions`), all or nothing: `unknown(missing ids)` and no change if any is not found.
    The rows come back in the order of `ids`."""
    wanted = list(dict.fromkeys(ids))
    found = (await session.scalars(select(model).where(*conditions, model.id.in_(wanted)))).all()
    missing = sorted(set(wanted) - {row.id for row in found})
    if missing:
        raise unknown(missing)
    reviewed_at = utcnow()
    for row in found:
        for column, value in marks.items():
            setattr(row, column, value)
        row.reviewed_at = reviewed_at
    await session.flush()
    order = {row_id: index for index, row_id in enumerate(wanted)}
    return sorted(found, key=lambda row: order[row.id])


async def _oldest_first(session: AsyncSession, query: Any, model: Any, page_size: int) -> AsyncIterator[Any]:
    """The rows of `query` (over `model`), oldest first, a page at a time: keyset paging on
    (created_at, id), so rows written meanwhile neither repeat nor shift a page."""
    after: tuple[datetime, str] | None = None
    while True:
        paged = query
        if after is not None:
            created_at, row_id = after
            paged = query.where(
                (model.created_at > created_at) | ((model.created_at == created_at) & (model.id > row_id))
            )
        page = (await session.scalars(paged.order_by(model.created_at, model.id).limit(page_size))).all()
        for row in page:
            yield row
        if len(page) < page_size:
            return
        after = (page[-1].created_at, page[-1].id)


# --- checks ----------------------------------------------------------------------------------


async def verdict_counts(
    session: AsyncSession,
    bucket: Bucket,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    framework: str | None = None,
) -> list[VerdictCount]:
    """Checks per UTC hour or day, framework and verdict, oldest bucket first."""
    start = _bucket_start(session.get_bind().dialect.name, bucket)
    query = select(start.label("bucket"), Check.framework, Check.verdict, func.count())
    if since is not None:
        query = query.where(Check.created_at >= since)
    if until is not None:
        query = query.where(Check.created_at < until)
    if framework is not None:
        query = query.where(Check.framework == framework)
    query = query.group_by(start, Check.framework, Check.verdict).order_by(
        start, Check.framework, Check.verdict
    )
    rows = (await session.execute(query)).all()
    return [
        VerdictCount(_as_bucket_datetime(row[0]), row[1], row[2], row[3]) for row in rows
    ]


def _bucket_start(dialect: str, bucket: Bucket) -> ColumnElement[Any]:
    if dialect == "sqlite":
        # SQLite keeps UTC wall-clock text (see models.UTCDateTime).
        pattern = "%Y-%m-%d %H:00:00" if bucket == "hour" else "%Y-%m-%d 00:00:00"
        return func.strftime(pattern, Check.created_at)
    # Literals, not bound parameters: PostgreSQL must see the GROUP BY expression as identical.
    utc = func.timezone(literal_column("'UTC'"), Check.created_at)
    return func.date_trunc(literal_column(f"'{bucket}'"), utc)


def _as_bucket_datetime(value: datetime | str) -> datetime:
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return as_utc(parsed)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class OutcomeCount:
    framework: str
    checks: int
    flagged: int  # judged unethical
    repaired: int  # flagged, and a repair passed
    blocked: int  # flagged, and no repair passed
    unchecked: int  # the judge failed: sent or refused by the failure policy


# Flagged and no repair passed. Since migration 0002 such a check also keeps its text.
_BLOCKED = (Check.attempts > 0) & Check.repaired.is_(False)


async def outcome_counts(session: AsyncSession, where: CheckFilter) -> list[OutcomeCount]:
    """Per framework: how many checks were flagged, repaired, blocked and left unchecked."""
    def total(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    query = (
        select(
            Check.framework, func.count(), total(Check.verdict == "unethical"),
            total(Check.repaired.is_(True)), total(_BLOCKED), total(Check.verdict == "unchecked"),
        )
        .where(*where.conditions()).group_by(Check.framework).order_by(Check.framework)
    )
    return [OutcomeCount(*row) for row in (await session.execute(query)).all()]


async def score_histogram(session: AsyncSession, where: CheckFilter, bins: int = 20) -> list[int]:
    """Checks per score bin over [0, 1] (`bins` equal widths; a score of 1 is in the last)."""
    scaled = Check.score * bins
    # PostgreSQL's integer cast rounds, SQLite's truncates; floor() is optional in SQLite.
    index = cast(scaled, Integer) if session.get_bind().dialect.name == "sqlite" else func.floor(scaled)
    query = (
        select(index, func.count())
        .where(Check.score.is_not(None), *where.conditions()).group_by(index)
    )
    counts = [0] * bins
    for value, count in (await session.execute(query)).all():
        counts[min(max(int(value), 0), bins - 1)] += count
    return counts


async def thresholds_in_use(session: AsyncSession, where: CheckFilter) -> list[tuple[str, float]]:
    """(framework, threshold) of the checks `where` selects, each pair once, by framework: what
    their scores were flagged at (older checks, which did not record it, are left out)."""
    query = (
        select(Check.framework, Check.threshold)
        .where(Check.threshold.is_not(None), *where.conditions())
        .distinct().order_by(Check.framework, Check.threshold)
    )
    return [(framework, float(threshold)) for framework, threshold in (await session.execute(query)).all()]


STAGES = {"upstream": Check.upstream_ms, "judge": Check.judge_ms, "repair": Check.repair_ms}


async def stage_latency(
    session: AsyncSession, where: CheckFilter, quantiles: Sequence[float] = (0.5, 0.95)
) -> dict[str, list[float | None]]:
    """Milliseconds per stage at each quantile (nearest rank; None without data). The repair
    stage counts only checks that tried a repair."""
    latency: dict[str, list[float | None]] = {}
    for stage, column in STAGES.items():
        conditions = where.conditions() + ([Check.attempts > 0] if stage == "repair" else [])
        total = await session.scalar(select(func.count()).select_from(Check).where(*conditions)) or 0
        # Same SQL on both dialects (SQLite has no percentile function): one ordered row each.
        latency[stage] = [
            await session.scalar(
                select(column).where(*conditions).order_by(column)
                .limit(1).offset(max(math.ceil(quantile * total) - 1, 0))
            ) if total else None
            for quantile in quantiles
        ]
    return latency


def _blocked_conditions(
    where: CheckFilter, review: BlockedReviewState | None
) -> list[ColumnElement[bool]]:
    conditions = [_BLOCKED, *where.conditions()]
    if review == "unreviewed":
        conditions.append(Check.blocked_review.is_(None))
    elif review is not None:
        conditions.append(Check.blocked_review == BlockedReview(review).value)
    return conditions


async def list_blocked(
    session: AsyncSession, where: CheckFilter, *, limit: int, offset: int = 0,
    review: BlockedReviewState | None = None,
) -> Sequence[Check]:
    """Blocked answers (flagged, no repair passed) with their text, newest first."""
    query = (
        select(Check).where(*_blocked_conditions(where, review))
        .order_by(Check.created_at.desc(), Check.id.desc()).limit(limit).offset(offset)
    )
    return (await session.scalars(query)).all()


async def count_blocked(
    session: AsyncSession, where: CheckFilter, *, review: BlockedReviewState | None = None
) -> int:
    query = select(func.count()).select_from(Check).where(*_blocked_conditions(where, review))
    return (await session.scalar(query)) or 0


async def get_blocked(session: AsyncSession, check_id: str) -> Check | None:
    """The blocked answer with this check id; None if there is none (or the check passed)."""
    return (await session.scalars(select(Check).where(_BLOCKED, Check.id == check_id))).first()


async def set_blocked_review(
    session: AsyncSession, ids: Sequence[str], review: BlockedReview
) -> Sequence[Check]:
    """Mark blocked answers rightly or wrongly blocked, all or nothing: `UnknownBlocked` (and no
    change) if any id is not a blocked answer. A second mark replaces the first."""
    return await _review_all(session, Check, ids, UnknownBlocked, _BLOCKED, blocked_review=review.value)


async def iter_reviewed_blocked(
    session: AsyncSession, where: CheckFilter, *, page_size: int = 500
) -> AsyncIterator[Check]:
    """Every blocked answer a reviewer has marked, oldest first, a page at a time (keyset)."""
    query = select(Check).where(_BLOCKED, Check.blocked_review.is_not(None), *where.conditions())
    async for check in _oldest_first(session, query, Check, page_size):
        yield check


# --- API keys --------------------------------------------------------------------------------


async def create_api_key(
    session: AsyncSession, name: str, *, framework: str | None = None, mode: str | None = None
) -> tuple[ApiKey, str]:
    """A new key row and the plaintext key, which exists nowhere else: show it once."""
    plaintext, key_hash = generate_key()
    key = ApiKey(
        name=name, prefix=visible_prefix(plaintext), key_hash=key_hash,
        framework=framework, mode=mode,
    )
    session.add(key)
    await session.flush()
    return key, plaintext


async def list_api_keys(session: AsyncSession) -> Sequence[ApiKey]:
    """Every key, revoked ones included, newest first."""
    query = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id)
    return (await session.scalars(query)).all()


async def active_api_keys(session: AsyncSession) -> Sequence[ApiKey]:
    return (await session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None)))).all()


async def revoke_api_key(session: AsyncSession, key_id: str) -> ApiKey | None:
    """Mark a key revoked (once: a second revoke keeps the first time). None if unknown."""
    await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return await session.get(ApiKey, key_id, populate_existing=True)


async def revoke_console_session(session: AsyncSession, session_hash: str, expires_at: datetime) -> None:
    """Record a console logout (twice, from two workers, is once) and forget the revocations
    of sessions that have expired anyway."""
    now = utcnow()
    await session.execute(delete(ConsoleSessionRevocation).where(ConsoleSessionRevocation.expires_at <= now))
    if expires_at <= now:
        return
    insert = sqlite.insert if session.bind.dialect.name == "sqlite" else postgresql.insert
    await session.execute(
        insert(ConsoleSessionRevocation)
        .values(session_hash=session_hash, expires_at=expires_at)
        .on_conflict_do_nothing(index_elements=["session_hash"])
    )


async def console_session_revoked(session: AsyncSession, session_hash: str) -> bool:
    found = await session.execute(
        select(ConsoleSessionRevocation.session_hash).where(ConsoleSessionRevocation.session_hash == session_hash)
    )
    return found.first() is not None
