"""OpenAI's error shape for every failure a client can see (docs/architecture.md, invariant 6)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.core.backend import BackendError, Overloaded

log = logging.getLogger("conscience.errors")


class APIError(Exception):
    """Raise anywhere on the request path to answer with OpenAI's error body."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code
        self.headers = headers


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(
    status_code: int,
    message: str,
    error_type: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(message, error_type, param, code), status_code=status_code, headers=headers
    )


_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def _unparsed_json(error: dict[str, Any]) -> str:
    """OpenAI's answer to a body that is not JSON, with what the parser saw (FastAPI puts the
    offset where a field name goes: "28: JSON decode error", param "28")."""
    position = error["loc"][-1]
    problem = (error.get("ctx") or {}).get("error", "invalid JSON")
    return (
        f"We could not parse the JSON body of your request ({problem} at character {position}). "
        "The API expects a JSON payload."
    )


def _undeclared_json(exc: RequestValidationError, request: Request) -> str | None:
    """Why the body was never parsed: it came with a Content-Type that is not JSON, so FastAPI
    handed the route raw bytes. None for any other validation failure. (A body without a
    Content-Type is parsed as JSON, as OpenAI's API and vLLM's do: see create_app.)"""
    errors = exc.errors()
    if len(errors) != 1 or tuple(errors[0].get("loc", ())) != ("body",):
        return None
    if not isinstance(errors[0].get("input"), bytes):
        return None
    declared = request.headers.get("content-type", "")
    return f"Content-Type must be application/json; the request declared {declared!r}."


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "Invalid request body.", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return _unparsed_json(first), None
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    message = first.get("msg", "invalid value")
    if param:
        message = f"{param}: {message}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error(s))"
    return message, param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(
            exc.status_code, exc.message, exc.error_type,
            param=exc.param, code=exc.code, headers=exc.headers,
        )

    @app.exception_handler(BackendError)
    async def _backend_error(_: Request, exc: BackendError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Overloaded) else None
        return error_response(
            exc.status_code, exc.message, exc.error_type,
            param=exc.param, code=exc.code, headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        not_json = _undeclared_json(exc, request)
        if not_json is not None:
            return error_response(415, not_json, "invalid_request_error")
        message, param = _describe_validation(exc)
        return error_response(400, message, "invalid_request_error", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = "Unknown route."
        else:
            message = str(exc.detail)
        return error_response(
            exc.status_code,
            message,
            _STATUS_TYPES.get(exc.status_code, "api_error"),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, "Internal error; see the server log.", "api_error")
