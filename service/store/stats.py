"""The console's and the admin API's figures over the checks: verdicts per hour or day, outcomes
per framework, the score histogram, the thresholds in use and each stage's latency.

Functions take an `AsyncSession` and never commit, as service/store/repository.py's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Integer, case, cast, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.models import Check, as_utc
from service.store.repository import BLOCKED, CheckFilter

Bucket = Literal["hour", "day"]


@dataclass(frozen=True, slots=True)
class VerdictCount:
    bucket_start: datetime
    framework: str
    verdict: str
    count: int


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


async def outcome_counts(session: AsyncSession, where: CheckFilter) -> list[OutcomeCount]:
    """Per framework: how many checks were flagged, repaired, blocked and left unchecked."""
    def total(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    query = (
        select(
            Check.framework, func.count(), total(Check.verdict == "unethical"),
            total(Check.repaired.is_(True)), total(BLOCKED), total(Check.verdict == "unchecked"),
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
