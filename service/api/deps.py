"""Dependencies and response documentation shared by the API routes."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request

from service.api.checked_serving import Caller
from service.logs import request_id_var
from service.security.auth import require_client
from service.security.cache import ClientIdentity

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": "string", "nullable": True},
                "code": {"type": "string", "nullable": True},
            },
            "required": ["message", "type", "param", "code"],
        }
    },
    "required": ["error"],
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}


OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Invalid request body."),
    401: _error("Missing or incorrect API key."),
    403: _error("The request asks for a conscience mode its key may not use."),
    413: _error("Request body too large."),
    429: _error("The backend's queue is full."),
    502: _error("Upstream unreachable or failing."),
    504: _error("Upstream timed out."),
}


async def caller_of(identity: ClientIdentity | None = Depends(require_client)) -> Caller:
    if identity is None:
        return Caller()
    return Caller(api_key_id=identity.id, framework=identity.framework, mode=identity.mode)


def request_id_of(_: Request) -> str:
    return request_id_var.get()
