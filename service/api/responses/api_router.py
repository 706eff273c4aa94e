"""POST /v1/responses: the Responses API, served as a translation over the checked chat
serving (chat_request.py in, chat_response.py and event_stream.py out), so it is checked
exactly like chat; its checks are recorded with endpoint `responses`. The serving returns data
(a completion, or its chunks), which this surface frames as a `response` object or events."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import Response, StreamingResponse

from service.api import state
from service.api.chat_completion.protocol import ChatCompletionRequest
from service.api.checked_plan import CheckedStream
from service.api.deps import OPENAI_ERRORS, request_id_of
from service.api.responses.chat_request import chat_request
from service.api.responses.chat_response import response_from_chat
from service.api.responses.event_stream import response_events, sse_event
from service.api.responses.protocol import ResponseObject, ResponsesRequest
from service.errors import APIError
from service.security.auth import require_client
from service.security.cache import ClientIdentity

router = APIRouter(tags=["openai"])


def _in_responses_terms(error: APIError) -> APIError:
    """A chat error about a field this API names otherwise (chat_request.py), in its name."""
    if error.param != "max_tokens":
        return error
    return APIError(
        error.status_code, error.message.replace("max_tokens", "max_output_tokens", 1),
        error_type=error.error_type, param="max_output_tokens", code=error.code, headers=error.headers,
    )


@router.post(
    "/v1/responses",
    response_model=ResponseObject,
    responses={200: {"content": {"text/event-stream": {}}}, **OPENAI_ERRORS},
    summary="Response (the Responses API), checked by the conscience",
)
async def create_response(
    body: ResponsesRequest, raw: Request, caller: ClientIdentity | None = Depends(require_client)
) -> Response:
    try:
        chat = ChatCompletionRequest.model_validate(chat_request(body))
    except ValidationError as exc:  # an input that makes no chat request (no messages): a 400
        raise RequestValidationError(exc.errors()) from None
    try:
        answer = await state.chat_serving(raw).create(chat, caller, request_id_of(raw), endpoint="responses")
    except APIError as exc:
        raise _in_responses_terms(exc) from None
    if not isinstance(answer, CheckedStream):
        return Response(
            orjson.dumps(response_from_chat(answer.body, body)), media_type="application/json", headers=answer.headers,
        )

    async def events() -> AsyncIterator[bytes]:
        async with contextlib.aclosing(answer.chunks):  # type: ignore[type-var]  # an async generator
            async for event in response_events(answer.chunks, body):
                yield sse_event(event)

    return StreamingResponse(events(), media_type="text/event-stream", headers=answer.headers)
