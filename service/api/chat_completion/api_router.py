"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.api.chat_completion.protocol import ChatCompletionRequest, ChatCompletionResponse
from service.api.checked_serving import Caller
from service.api.deps import OPENAI_ERRORS, caller_of, request_id_of

router = APIRouter(tags=["openai"])


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **OPENAI_ERRORS},
    summary="Chat completion, checked by the conscience",
)
async def create_chat_completion(
    body: ChatCompletionRequest, raw: Request, caller: Caller = Depends(caller_of)
) -> Response:
    return await raw.app.state.chat_serving.create(body, caller, request_id_of(raw))
