"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import JSONResponse, Response

from service.api import state
from service.backends.base import BackendError

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The backend and the database are reachable",
    responses={503: {"description": "Something the proxy needs is down."}},
)
async def readyz(raw: Request) -> Response:
    checks: dict[str, Any] = {}
    try:
        await state.backend(raw).check_ready()
        checks["backend"] = "ok"
    except BackendError as exc:
        checks["backend"] = exc.message
    try:
        await state.database(raw).ping()
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready"
        checks["database"] = f"unreachable: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    checks["spool_depth"] = state.record_writer(raw).spool_depth
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(raw: Request) -> Response:
    return Response(state.metrics(raw).render(), media_type=CONTENT_TYPE_LATEST)
