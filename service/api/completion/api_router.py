"""POST /v1/completions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.api.checked_serving import Caller
from service.api.completion.protocol import CompletionRequest, CompletionResponse
from service.api.deps import OPENAI_ERRORS, caller_of, request_id_of

router = APIRouter(tags=["openai"])


@router.post(
    "/v1/completions",
    response_model=CompletionResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **OPENAI_ERRORS},
    summary="Text completion, checked by the conscience",
)
async def create_completion(
    body: CompletionRequest, raw: Request, caller: Caller = Depends(caller_of)
) -> Response:
    return await raw.app.state.completion_serving.create(body, caller, request_id_of(raw))
