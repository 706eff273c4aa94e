"""HTTP routes of the admin API, mounted at /admin; every route needs the admin key."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from service.api import state
from service.api.admin import serving
from service.api.admin.protocol import (
    BlockedList,
    BlockedReviewRequest,
    BlockedReviewResult,
    PreferenceExample,
    ReviewRequest,
    ReviewResult,
    TripleList,
    TripleOut,
    VerdictStats,
)
from service.api.deps import ADMIN_ERRORS
from service.security.auth import require_admin
from service.store.db import Database
from service.store.models import TripleStatus
from service.store.repository import BlockedReviewState, CheckFilter, TripleFilter
from service.store.stats import Bucket

router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)], responses=ADMIN_ERRORS
)

Since = Annotated[datetime | None, Query(description="Only items created at or after this time.")]
Until = Annotated[datetime | None, Query(description="Only items created before this time.")]
Framework = Annotated[str | None, Query(description="Only this framework.")]


def _db(request: Request) -> Database:
    return state.database(request)


@router.get("/triples", response_model=TripleList)
async def list_triples(
    request: Request,
    status: Annotated[
        TripleStatus | None, Query(description="Only triples in this status.")
    ] = None,
    framework: Framework = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,  # a database integer, not a 500
) -> TripleList:
    """Triples, newest first."""
    where = TripleFilter(status=status, framework=framework, since=since, until=until)
    return await serving.list_triples(_db(request), where, limit=limit, offset=offset)


@router.get(
    "/triples/export",
    response_class=StreamingResponse,
    responses={200: {
        "content": {"application/x-ndjson": {"schema": PreferenceExample.model_json_schema()}},
        "description": "One PreferenceExample per line (TRL conversational preference format).",
    }},
)
async def export_triples(request: Request, framework: Framework = None) -> StreamingResponse:
    """Approved triples as JSONL, ready for TRL's DPOTrainer."""
    lines = serving.export_approved(_db(request), framework)
    return StreamingResponse(lines, media_type="application/x-ndjson")


@router.post("/triples/review", response_model=ReviewResult)
async def review_triples(request: Request, body: ReviewRequest) -> ReviewResult:
    """Approve or reject many triples at once (all or none: unknown ids change nothing)."""
    return await serving.review(_db(request), body.ids, TripleStatus(body.status))


@router.post("/triples/{triple_id}/approve", response_model=TripleOut)
async def approve_triple(request: Request, triple_id: str) -> TripleOut:
    result = await serving.review(
        _db(request), [triple_id], TripleStatus.APPROVED, param="triple_id"
    )
    return result.data[0]


@router.post("/triples/{triple_id}/reject", response_model=TripleOut)
async def reject_triple(request: Request, triple_id: str) -> TripleOut:
    result = await serving.review(
        _db(request), [triple_id], TripleStatus.REJECTED, param="triple_id"
    )
    return result.data[0]


@router.get("/blocked", response_model=BlockedList)
async def list_blocked(
    request: Request,
    review: Annotated[
        BlockedReviewState | None,
        Query(description="Only answers not yet reviewed, or marked right (rightly blocked) or wrong."),
    ] = None,
    framework: Framework = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> BlockedList:
    """Blocked answers (flagged, no repair passed) with their text, newest first."""
    where = CheckFilter(framework=framework, since=since, until=until)
    return await serving.list_blocked(_db(request), where, review, limit=limit, offset=offset)


@router.post("/blocked/review", response_model=BlockedReviewResult)
async def review_blocked(request: Request, body: BlockedReviewRequest) -> BlockedReviewResult:
    """Mark blocked answers rightly or wrongly blocked (all or none: unknown ids change nothing)."""
    return await serving.review_blocked(_db(request), body.ids, body.review)


@router.get("/stats/verdicts", response_model=VerdictStats)
async def verdict_stats(
    request: Request,
    bucket: Annotated[Bucket, Query(description="hour | day (UTC).")] = "hour",
    since: Since = None,
    until: Until = None,
    framework: Framework = None,
) -> VerdictStats:
    """Checked completions per time bucket, framework and verdict."""
    return await serving.verdict_stats(
        _db(request), bucket, since=since, until=until, framework=framework
    )
