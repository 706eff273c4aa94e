"""Dependencies and response documentation shared by the API routes."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from service.logs import request_id_var

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
    415: _error("The body is declared as something other than JSON (Content-Type)."),
    429: _error("The backend's queue is full."),
    502: _error("Upstream unreachable or failing."),
    504: _error("Upstream timed out."),
}


# Every admin route's own refusals (service/security/auth.py: require_admin).
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("Missing or incorrect admin key."),
    403: _error("The admin API is disabled: no admin key is set."),
    429: _error("Too many incorrect keys from this address (Retry-After says when to retry)."),
}


def request_id_of(_: Request) -> str:
    return request_id_var.get()
