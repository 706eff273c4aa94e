"""Liveness, readiness and Prometheus metrics (the metrics behind a key: they name frameworks,
models and traffic; see require_metrics_reader)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import JSONResponse, Response

from service.api import state
from service.api.deps import OPENAI_ERRORS
from service.core.backend import BackendError
from service.security.auth import require_metrics_reader

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


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="For the bearer of CONSCIENCE_SECURITY__METRICS_KEY, or anyone with --metrics-public.",
    response_class=Response,
    dependencies=[Depends(require_metrics_reader)],
    responses={
        401: {**OPENAI_ERRORS[401], "description": "Missing or incorrect metrics key."},
        403: {**OPENAI_ERRORS[403], "description": "No metrics key is set and --metrics-public is off."},
        429: {**OPENAI_ERRORS[429], "description": "Too many incorrect keys from this address."},
    },
)
async def metrics(raw: Request) -> Response:
    return Response(state.metrics(raw).render(), media_type=CONTENT_TYPE_LATEST)
