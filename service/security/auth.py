"""FastAPI dependencies for client and admin authentication.

They read `request.app.state.settings` (Settings) and `request.app.state.keys` (ApiKeyCache).
Failures are `APIError`s, so clients see OpenAI's error shape.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

from fastapi import Request
from pydantic import SecretStr

from service.errors import APIError
from service.security.cache import ApiKeyCache, ClientIdentity
from service.security.throttle import auth_failures, client_address
from service.settings import Settings

log = logging.getLogger("conscience.security")

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
# How often an open proxy repeats its warning: often enough to be seen in any log window.
OPEN_ACCESS_WARNING_INTERVAL_S = 300.0


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def client_keys_required(settings: Settings, keys: ApiKeyCache) -> bool:
    """The explicit setting, else: required as soon as a key exists, revoked ones included."""
    if settings.security.require_api_key is not None:
        return settings.security.require_api_key
    return keys.has_keys or keys.issued


async def require_client(request: Request) -> ClientIdentity | None:
    """The caller's identity, or None when keys are not required and no known key was sent."""
    settings: Settings = request.app.state.settings
    keys: ApiKeyCache = request.app.state.keys
    token = bearer_token(request)
    identity = keys.lookup(token) if token else None
    if identity is not None:
        return identity
    if settings.security.require_api_key is not False and not keys.loaded:
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


class TooManyFailures(APIError):
    """429 with Retry-After: this client address sent too many wrong keys of late."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            429, f"Too many incorrect keys from this address: retry in {retry_after_s} s.",
            error_type="rate_limit_exceeded", code="too_many_auth_failures",
            headers={"Retry-After": str(retry_after_s)},
        )
        self.retry_after_s = retry_after_s


def key_accepted(request: Request, expected: SecretStr, token: str) -> bool:
    """Whether `token` is `expected`, a miss counted against the caller's address.

    Raises TooManyFailures while the address is over --auth-max-failures, before comparing:
    an answer that still told a right key from a wrong one would leave guessing unlimited.
    """
    failures, address = auth_failures(request), client_address(request)
    if (retry_after_s := failures.retry_after_s(address)) is not None:
        raise TooManyFailures(retry_after_s)
    if _keys_equal(token, expected):
        return True
    failures.failed(address)
    return False


async def require_admin(request: Request) -> None:
    settings: Settings = request.app.state.settings
    if settings.security.admin_key is None:
        raise APIError(
            403, "The admin API is disabled: set CONSCIENCE_SECURITY__ADMIN_KEY to enable it.",
            error_type="permission_error", code="admin_disabled",
        )
    if not key_accepted(request, settings.security.admin_key, bearer_token(request) or ""):
        raise APIError(
            401, "Incorrect admin key provided.",
            error_type="authentication_error", code="invalid_admin_key", headers=_CHALLENGE,
        )


async def require_metrics_reader(request: Request) -> None:
    """/metrics: open with --metrics-public, else for the bearer of CONSCIENCE_SECURITY__METRICS_KEY."""
    settings: Settings = request.app.state.settings
    if settings.security.metrics_public:
        return
    if settings.security.metrics_key is None:
        raise APIError(
            403, "/metrics is closed: set CONSCIENCE_SECURITY__METRICS_KEY (Prometheus sends it as a bearer "
            "token) or --metrics-public.",
            error_type="permission_error", code="metrics_disabled",
        )
    if not key_accepted(request, settings.security.metrics_key, bearer_token(request) or ""):
        raise APIError(
            401, "Incorrect metrics key provided.",
            error_type="authentication_error", code="invalid_metrics_key", headers=_CHALLENGE,
        )


def _keys_equal(token: str, expected: SecretStr) -> bool:
    # Digests of equal length: the comparison reveals neither the key's content nor its length.
    return hmac.compare_digest(_digest(token), _digest(expected.get_secret_value()))


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def open_access_warning(settings: Settings, keys: ApiKeyCache) -> str | None:
    """Log and return a loud warning when anyone who can reach the server may use it."""
    if not keys.loaded and settings.security.require_api_key is None:
        return None
    if client_keys_required(settings, keys):
        return None
    warning = (
        f"CLIENT API KEYS ARE NOT REQUIRED: anyone who can reach {settings.serving.host}:{settings.serving.port} "
        "can use the model through this proxy. Create a key with "
        "'conscience keys create --name NAME' or set CONSCIENCE_SECURITY__REQUIRE_API_KEY=true."
    )
    log.warning(warning)
    return warning


class OpenAccessAlarm:
    """`ApiKeyCache`'s `on_refresh`: repeats `open_access_warning` while the proxy is open, at
    most once every `interval_s` seconds, so the warning is never only at start-up."""

    def __init__(self, settings: Settings, interval_s: float = OPEN_ACCESS_WARNING_INTERVAL_S) -> None:
        self._settings = settings
        self._interval_s = interval_s
        self._last: float | None = None

    def __call__(self, keys: ApiKeyCache) -> None:
        now = time.monotonic()
        if self._last is not None and now - self._last < self._interval_s:
            return
        if open_access_warning(self._settings, keys) is not None:
            self._last = now
