"""What each console page shows, read through the repository the admin API uses.

Filters come from query strings and forms typed by people, so they are parsed leniently: a
value that does not parse is dropped and named in `problems` (the page says so) instead of
failing the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup

from service.api.ui import charts
from service.store import repository, stats
from service.store.db import Database
from service.store.models import BlockedReview, Check, Triple, TripleStatus, as_utc
from service.store.records import utcnow
from service.store.repository import BlockedReviewState, CheckFilter, TripleFilter
from service.store.stats import Bucket

PAGE_SIZE = 50
VERDICTS = ("ethical", "neutral", "unethical", "unchecked")
SCORE_BINS = 20
# Dashboard ranges: how far back, and the bucket of the verdicts-over-time chart.
RANGES: dict[str, tuple[timedelta, Bucket]] = {
    "24h": (timedelta(hours=24), "hour"),
    "7d": (timedelta(days=7), "day"),
    "30d": (timedelta(days=30), "day"),
}


def _time(text: str) -> datetime:
    return as_utc(datetime.fromisoformat(text))  # type: ignore[return-value]


def _score(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(value)
    return value


@dataclass(frozen=True, slots=True)
class TripleQuery:
    """The review queue's filters and position, as the filter form and the links carry them."""

    status: TripleStatus | None = TripleStatus.PENDING
    framework: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    since: datetime | None = None
    until: datetime | None = None
    offset: int = 0
    problems: list[str] = field(default_factory=list, compare=False)

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> TripleQuery:
        problems: list[str] = []
        values: dict[str, Any] = {}
        parsers: dict[str, Any] = {
            "status": lambda t: TripleStatus(t) if t != "any" else None,
            "framework": str, "min_score": _score, "max_score": _score,
            "since": _time, "until": _time, "offset": lambda t: max(int(t), 0),
        }
        for name, parse in parsers.items():
            text = (params.get(name) or "").strip()
            if not text:
                continue
            try:
                values[name] = parse(text)
            except ValueError:
                problems.append(f"{name}: {text[:40]!r} is not valid; ignored")
        return cls(**values, problems=problems)

    def where(self) -> TripleFilter:
        return TripleFilter(
            status=self.status, framework=self.framework, since=self.since, until=self.until,
            min_score=self.min_score, max_score=self.max_score,
        )

    def query_string(self, **changes: Any) -> str:
        """The URL query for these filters (with `changes`), e.g. the next triple's link."""
        query = replace(self, **changes)
        params = {
            "status": query.status.value if query.status else "any",
            "framework": query.framework, "min_score": query.min_score,
            "max_score": query.max_score,
            "since": query.since.isoformat() if query.since else None,
            "until": query.until.isoformat() if query.until else None,
            "offset": query.offset or None,
        }
        return urlencode({k: v for k, v in params.items() if v is not None})


@dataclass(frozen=True, slots=True)
class ReviewPage:
    current: Triple | None  # the triple at `offset`, shown in full
    listed: list[Triple]  # the page of matching triples for bulk actions
    total: int


async def review_page(db: Database, query: TripleQuery) -> ReviewPage:
    where = query.where()
    async with db.sessions() as session:
        current = await repository.list_triples(session, where, limit=1, offset=query.offset)
        listed = await repository.list_triples(session, where, limit=PAGE_SIZE)
        total = await repository.count_triples(session, where)
    return ReviewPage(current[0] if current else None, list(listed), total)


async def review(db: Database, ids: list[str], status: TripleStatus) -> int:
    """All or nothing, as the admin API: UnknownTriples if any id is missing."""
    async with db.sessions.begin() as session:
        return len(await repository.set_triple_status(session, ids, status))


BLOCKED_REVIEWS: tuple[BlockedReviewState, ...] = ("unreviewed", "right", "wrong")


def blocked_review_filter(text: str | None) -> BlockedReviewState | None:
    """The Blocked page's review filter; anything else (`any`, empty, unknown) shows all."""
    return text if text in BLOCKED_REVIEWS else None  # type: ignore[return-value]


def blocked_query_string(query: TripleQuery, review: BlockedReviewState | None, **changes: Any) -> str:
    """The Blocked page's URL query: the shared filters, the review filter, the position."""
    text = query.query_string(**changes)
    return f"{text}&{urlencode({'review': review})}" if review else text


async def blocked_page(
    db: Database, where: CheckFilter, offset: int, review: BlockedReviewState | None = None
) -> tuple[list[Check], int]:
    async with db.sessions() as session:
        rows = await repository.list_blocked(session, where, limit=PAGE_SIZE, offset=offset, review=review)
        return list(rows), await repository.count_blocked(session, where, review=review)


async def review_blocked(db: Database, ids: list[str], review: BlockedReview) -> int:
    """All or nothing, as the admin API: UnknownBlocked if any id is not a blocked answer."""
    async with db.sessions.begin() as session:
        return len(await repository.set_blocked_review(session, ids, review))


def _bucket_starts(since: datetime, until: datetime, bucket: Bucket) -> list[datetime]:
    """Every bucket of the range, so quiet hours show as gaps rather than disappear."""
    start = since.replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        start = start.replace(hour=0)
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    starts = []
    while start < until:
        starts.append(start)
        start += step
    return starts


@dataclass(frozen=True, slots=True)
class Dashboard:
    range: str
    framework: str | None
    verdict_charts: list[tuple[str, Markup]]  # one per framework
    score_chart: Markup
    rate_chart: Markup | None
    outcomes: list[stats.OutcomeCount]
    latency_chart: Markup
    latency: dict[str, list[float | None]]
    thresholds: list[tuple[str, float]]  # (framework, threshold) the range's checks were judged at


async def dashboard(db: Database, range_name: str, framework: str | None) -> Dashboard:
    span, bucket = RANGES[range_name]
    until = utcnow()
    since = until - span
    where = CheckFilter(framework=framework, since=since, until=until)
    async with db.sessions() as session:
        # The query behind GET /admin/stats/verdicts.
        counts = await stats.verdict_counts(
            session, bucket, since=since, until=until, framework=framework
        )
        histogram = await stats.score_histogram(session, where, SCORE_BINS)
        outcomes = await stats.outcome_counts(session, where)
        latency = await stats.stage_latency(session, where)
        thresholds = await stats.thresholds_in_use(session, where)
    starts = _bucket_starts(since, until, bucket)
    label = "%m-%d %H:00" if bucket == "hour" else "%Y-%m-%d"
    categories = [start.strftime(label) for start in starts]
    position = {start: index for index, start in enumerate(starts)}
    per_framework: dict[str, dict[str, list[float]]] = {}
    for count in counts:
        index = position.get(count.bucket_start)
        if index is None:  # a bucket that began before `since`
            continue
        series = per_framework.setdefault(count.framework, {v: [0.0] * len(starts) for v in VERDICTS})
        series.setdefault(count.verdict, [0.0] * len(starts))[index] += count.count
    verdict_charts = [
        (name, charts.columns(
            f"Verdicts per {bucket}, {name}", categories,
            [charts.Series(verdict, values) for verdict, values in series.items()],
        ))
        for name, series in sorted(per_framework.items())
    ]
    bins = [f"{i / SCORE_BINS:.2f}–{(i + 1) / SCORE_BINS:.2f}" for i in range(SCORE_BINS)]
    score_chart = charts.columns(
        "Distribution of scores", bins, [charts.Series("score", histogram)],
        markers=[(threshold, f"{name} {threshold:.3g}") for name, threshold in thresholds],
    )
    flagged = [o for o in outcomes if o.flagged]
    rate_chart = charts.bar_groups(
        "Repaired and blocked, share of flagged answers", [o.framework for o in flagged],
        [charts.Series("repaired", [100 * o.repaired / o.flagged for o in flagged]),
         charts.Series("blocked", [100 * o.blocked / o.flagged for o in flagged])],
        unit="%",
    ) if flagged else None
    latency_chart = charts.bar_groups(
        "Latency per stage", list(latency),
        [charts.Series(name, [values[i] or 0.0 for values in latency.values()])
         for i, name in enumerate(("p50", "p95"))],
        label_of=charts.duration,
    )
    return Dashboard(range_name, framework, verdict_charts, score_chart, rate_chart, outcomes,
                     latency_chart, latency, thresholds)


def gate_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """The gate's figures a version recorded (trainer.nightly.gate.GateReport.as_metrics), flattened
    for the table; missing ones (a version recorded elsewhere) are None."""
    gate = metrics.get("gate") or {}
    held_out = gate.get("held_out") or {}
    candidate, previous = held_out.get("candidate") or {}, held_out.get("previous") or {}
    refusals = gate.get("refusal_rate") or {}
    return {
        "passed": gate.get("passed"),
        "held_out_rows": gate.get("held_out_rows"),
        "accuracy": candidate.get("accuracy"),
        "previous_accuracy": previous.get("accuracy"),
        "margin": candidate.get("mean_margin"),
        "refusal_rate": refusals.get("candidate"),
        "previous_refusal_rate": refusals.get("previous"),
        "refusal_prompts": refusals.get("prompts"),
    }
