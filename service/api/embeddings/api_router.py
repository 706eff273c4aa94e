"""POST /v1/embeddings: passed through unchecked (there is no answer to judge)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from service.api import state
from service.api.deps import OPENAI_ERRORS
from service.security.auth import require_client
from service.security.cache import ClientIdentity

router = APIRouter(tags=["openai"])


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    input: str | list[str] | list[int] | list[list[int]] = Field(min_length=1)


class EmbeddingResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    object: str = "list"
    data: list[dict[str, Any]]
    model: str


@router.post("/v1/embeddings", response_model=EmbeddingResponse, responses=OPENAI_ERRORS)
async def create_embeddings(
    body: EmbeddingRequest, raw: Request, _: ClientIdentity | None = Depends(require_client)
) -> Response:
    result = await state.backend(raw).embeddings(body.model_dump(exclude_unset=True))
    return Response(orjson.dumps(result), media_type="application/json")
