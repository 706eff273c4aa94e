"""GET /v1/models: the backend's list (with vLLM: base model and loaded adapters)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from service.api import state
from service.api.deps import OPENAI_ERRORS
from service.security.auth import require_client
from service.security.cache import ClientIdentity

router = APIRouter(tags=["openai"])


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["model"] = "model"
    owned_by: str | None = None
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


@router.get("/v1/models", response_model=ModelList, responses=OPENAI_ERRORS)
async def list_models(raw: Request, _: ClientIdentity | None = Depends(require_client)) -> dict[str, Any]:
    return {"object": "list", "data": await state.backend(raw).models()}
