"""GET /v1/models: the backend's list (with vLLM: base model and loaded adapters)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from service.api.checked_serving import Caller
from service.api.deps import OPENAI_ERRORS, caller_of

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
async def list_models(raw: Request, _: Caller = Depends(caller_of)) -> dict[str, Any]:
    return {"object": "list", "data": await raw.app.state.backend.models()}
