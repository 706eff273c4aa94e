"""What each admin endpoint does, between the HTTP layer and the repository."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import orjson

from service.api.admin.protocol import (
    BlockedList,
    BlockedOut,
    BlockedReviewResult,
    ReviewResult,
    TripleList,
    TripleOut,
    VerdictBucket,
    VerdictStats,
)
from service.errors import APIError
from service.store import repository, stats
from service.store.db import Database
from service.store.models import BlockedReview, TripleStatus
from service.store.preference import preference_record
from service.store.repository import BlockedReviewState, CheckFilter, TripleFilter
from service.store.stats import Bucket


async def list_triples(db: Database, where: TripleFilter, *, limit: int, offset: int) -> TripleList:
    async with db.sessions() as session:
        rows = await repository.list_triples(session, where, limit=limit, offset=offset)
        total = await repository.count_triples(session, where)
    return TripleList(
        data=[TripleOut.model_validate(row) for row in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


async def review(
    db: Database, ids: list[str], status: TripleStatus, *, param: str = "ids"
) -> ReviewResult:
    try:
        async with db.sessions.begin() as session:
            rows = await repository.set_triple_status(session, ids, status)
    except repository.UnknownTriples as exc:
        raise APIError(
            404, f"No triple with id {', '.join(repr(i) for i in exc.ids)}.",
            error_type="not_found_error", param=param, code="triple_not_found",
        ) from None
    return ReviewResult(data=[TripleOut.model_validate(row) for row in rows])


async def list_blocked(
    db: Database, where: CheckFilter, review: BlockedReviewState | None, *, limit: int, offset: int
) -> BlockedList:
    async with db.sessions() as session:
        rows = await repository.list_blocked(session, where, limit=limit, offset=offset, review=review)
        total = await repository.count_blocked(session, where, review=review)
    return BlockedList(
        data=[BlockedOut.model_validate(row) for row in rows], total=total, limit=limit, offset=offset
    )


async def review_blocked(db: Database, ids: list[str], review: BlockedReview) -> BlockedReviewResult:
    try:
        async with db.sessions.begin() as session:
            rows = await repository.set_blocked_review(session, ids, review)
    except repository.UnknownBlocked as exc:
        raise APIError(
            404, f"No blocked answer with id {', '.join(repr(i) for i in exc.ids)}.",
            error_type="not_found_error", param="ids", code="blocked_not_found",
        ) from None
    return BlockedReviewResult(data=[BlockedOut.model_validate(row) for row in rows])


async def export_approved(db: Database, framework: str | None) -> AsyncIterator[bytes]:
    """Approved triples as JSONL lines, oldest first, streamed page by page."""
    where = TripleFilter(status=TripleStatus.APPROVED, framework=framework)
    async with db.sessions() as session:
        async for triple in repository.iter_triples(session, where):
            yield orjson.dumps(preference_record(triple.prompt, triple.chosen, triple.rejected)) + b"\n"


async def verdict_stats(
    db: Database,
    bucket: Bucket,
    *,
    since: datetime | None,
    until: datetime | None,
    framework: str | None,
) -> VerdictStats:
    async with db.sessions() as session:
        counts = await stats.verdict_counts(
            session, bucket, since=since, until=until, framework=framework
        )
    return VerdictStats(
        bucket=bucket,
        data=[
            VerdictBucket(
                bucket_start=count.bucket_start, framework=count.framework,
                verdict=count.verdict, count=count.count,
            )
            for count in counts
        ],
    )
