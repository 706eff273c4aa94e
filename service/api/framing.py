"""The checked serving's data framed for the OpenAI wire: a completion as JSON, chunks as
server-sent events ending in `[DONE]`. The Responses API frames the same data its own way
(service/api/responses/)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import orjson
from starlette.responses import Response, StreamingResponse

from service.api.checked_plan import CheckedAnswer, CheckedStream
from service.core.backend import JSON

SSE_DONE = b"data: [DONE]\n\n"


def sse(chunk: JSON) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def sse_body(chunks: AsyncIterator[JSON]) -> AsyncIterator[bytes]:
    """Each chunk as an event, then `[DONE]`; closing it closes `chunks` (a client gone)."""
    async with contextlib.aclosing(chunks):  # type: ignore[type-var]  # an async generator
        async for chunk in chunks:
            yield sse(chunk)
    yield SSE_DONE


def framed(answer: CheckedAnswer | CheckedStream) -> Response:
    if isinstance(answer, CheckedStream):
        return StreamingResponse(sse_body(answer.chunks), media_type="text/event-stream", headers=answer.headers)
    return Response(orjson.dumps(answer.body), media_type="application/json", headers=answer.headers)
