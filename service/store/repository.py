"""Async reads and reviews over the store, for the admin API and console, the CLI and the trainer:
triples and blocked answers (the figures over checks: service/store/stats.py; API keys and
console sessions: service/store/credentials.py).

Functions take an `AsyncSession` and never commit: the caller owns the transaction
(`async with db.sessions.begin() as session:`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.models import (
    BlockedReview,
    Check,
    Triple,
    TripleStatus,
    as_utc,
)
from service.store.records import utcnow


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


# --- blocked answers -------------------------------------------------------------------------


# Flagged and no repair passed. Since migration 0002 such a check also keeps its text.
BLOCKED = (Check.attempts > 0) & Check.repaired.is_(False)


def _blocked_conditions(
    where: CheckFilter, review: BlockedReviewState | None
) -> list[ColumnElement[bool]]:
    conditions = [BLOCKED, *where.conditions()]
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
    return (await session.scalars(select(Check).where(BLOCKED, Check.id == check_id))).first()


async def set_blocked_review(
    session: AsyncSession, ids: Sequence[str], review: BlockedReview
) -> Sequence[Check]:
    """Mark blocked answers rightly or wrongly blocked, all or nothing: `UnknownBlocked` (and no
    change) if any id is not a blocked answer. A second mark replaces the first."""
    return await _review_all(session, Check, ids, UnknownBlocked, BLOCKED, blocked_review=review.value)


async def iter_reviewed_blocked(
    session: AsyncSession, where: CheckFilter, *, page_size: int = 500
) -> AsyncIterator[Check]:
    """Every blocked answer a reviewer has marked, oldest first, a page at a time (keyset)."""
    query = select(Check).where(BLOCKED, Check.blocked_review.is_not(None), *where.conditions())
    async for check in _oldest_first(session, query, Check, page_size):
        yield check
