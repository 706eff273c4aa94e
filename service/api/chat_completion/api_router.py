"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.api import state
from service.api.chat_completion.protocol import ChatCompletionRequest, ChatCompletionResponse
from service.api.deps import OPENAI_ERRORS, request_id_of
from service.api.framing import framed
from service.security.auth import require_client
from service.security.cache import ClientIdentity

router = APIRouter(tags=["openai"])


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **OPENAI_ERRORS},
    summary="Chat completion, checked by the conscience",
)
async def create_chat_completion(
    body: ChatCompletionRequest, raw: Request, caller: ClientIdentity | None = Depends(require_client)
) -> Response:
    return framed(await state.chat_serving(raw).create(body, caller, request_id_of(raw)))
