"""Admin endpoints of the adapter registry (the HTTP twin of `conscience adapters`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from service.api import state
from service.api.adapters.protocol import AdapterVersionList, AdapterVersionOut
from service.api.adapters.serving import list_adapters
from service.api.deps import ADMIN_ERRORS, OPENAI_ERRORS
from service.security.auth import require_admin

router = APIRouter(
    prefix="/admin/adapters", tags=["admin"], dependencies=[Depends(require_admin)], responses=ADMIN_ERRORS
)

_ERRORS = {
    **OPENAI_ERRORS,
    404: {"description": "No version has that name."},
    409: {"description": "The version cannot be activated (failed the gate; no rollback target)."},
}


@router.get("", response_model=AdapterVersionList, summary="Every adapter version, newest first")
async def get_adapters(raw: Request) -> AdapterVersionList:
    return AdapterVersionList(data=await list_adapters(state.database(raw)))


@router.post("/{name}/activate", response_model=AdapterVersionOut, responses=_ERRORS,
             summary="Make a version the active one (behind vLLM: loaded there first)")
async def activate_adapter(name: str, raw: Request) -> AdapterVersionOut:
    return await state.adapter_activation(raw).activate(name)


@router.post("/rollback", response_model=AdapterVersionOut, responses=_ERRORS,
             summary="Re-activate the version the active one was trained from")
async def rollback_adapter(raw: Request) -> AdapterVersionOut:
    return await state.adapter_activation(raw).rollback()
