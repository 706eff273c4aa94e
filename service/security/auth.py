"""FastAPI dependencies for client and admin authentication.

They read `request.app.state.settings` (Settings) and `request.app.state.keys` (ApiKeyCache).
Failures are `APIError`s, so clients see OpenAI's error shape.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import Request

from service.errors import APIError
from service.security.cache import ApiKeyCache, ClientIdentity
from service.settings import Settings

log = logging.getLogger("conscience.security")

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def client_keys_required(settings: Settings, keys: ApiKeyCache) -> bool:
    """The explicit setting, else: required as soon as one active key exists."""
    if settings.require_api_key is not None:
        return settings.require_api_key
    return keys.has_keys


async def require_client(request: Request) -> ClientIdentity | None:
    """The caller's identity, or None when keys are not required and no known key was sent."""
    settings: Settings = request.app.state.settings
    keys: ApiKeyCache = request.app.state.keys
    token = bearer_token(request)
    identity = keys.lookup(token) if token else None
    if identity is not None:
        return identity
    if settings.require_api_key is not False and not keys.loaded:
        # Until the first load nobody knows which keys (if any) exist: refusing is the safe answer.
        raise APIError(
            503, "API keys could not be loaded from the database yet; retry shortly.",
            error_type="service_unavailable", code="keys_unavailable",
        )
    if not client_keys_required(settings, keys):
        return None
    if token is None:
        message = (
            "Incorrect API key provided: none was sent. "
            "Send it as the header 'Authorization: Bearer <key>'."
        )
    else:
        message = "Incorrect API key provided."
    raise APIError(
        401, message, error_type="authentication_error", code="invalid_api_key", headers=_CHALLENGE
    )


async def require_admin(request: Request) -> None:
    settings: Settings = request.app.state.settings
    if settings.admin_key is None:
        raise APIError(
            403, "The admin API is disabled: set CONSCIENCE_ADMIN_KEY to enable it.",
            error_type="permission_error", code="admin_disabled",
        )
    token = bearer_token(request) or ""
    expected = settings.admin_key.get_secret_value()
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise APIError(
            401, "Incorrect admin key provided.",
            error_type="authentication_error", code="invalid_admin_key", headers=_CHALLENGE,
        )


def open_access_warning(settings: Settings, keys: ApiKeyCache) -> str | None:
    """Log and return a loud warning when anyone who can reach the server may use it."""
    if not keys.loaded and settings.require_api_key is None:
        return None
    if client_keys_required(settings, keys):
        return None
    warning = (
        f"CLIENT API KEYS ARE NOT REQUIRED: anyone who can reach {settings.host}:{settings.port} "
        "can use the model through this proxy. Create a key with "
        "'conscience keys create --name NAME' or set CONSCIENCE_REQUIRE_API_KEY=true."
    )
    log.warning(warning)
    return warning
