"""POST /v1/completions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.api import state
from service.api.completion.protocol import CompletionRequest, CompletionResponse
from service.api.deps import OPENAI_ERRORS, request_id_of
from service.api.framing import framed
from service.security.auth import require_client
from service.security.cache import ClientIdentity

router = APIRouter(tags=["openai"])


@router.post(
    "/v1/completions",
    response_model=CompletionResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **OPENAI_ERRORS},
    summary="Text completion, checked by the conscience",
)
async def create_completion(
    body: CompletionRequest, raw: Request, caller: ClientIdentity | None = Depends(require_client)
) -> Response:
    return framed(await state.completion_serving(raw).create(body, caller, request_id_of(raw)))
