"""Console sessions: a self-contained signed cookie, and CSRF tokens.

Logging in with the admin key issues a session token that carries everything the session is —
its id, its CSRF token, its expiry (wall-clock) — signed with HMAC-SHA256 under a key derived
from the admin key. A session works on every worker of `serve --workers N` and on every replica
that has the same admin key; a restart keeps it, and changing the admin key ends every session.
Logging out clears the cookie and records the session's id (its SHA-256) in the database all
workers and replicas share (`console_session_revocations`, until the session would have
expired); every console request checks its session there, so a copied cookie replayed to any
worker or replica after a logout is refused at once. That is one indexed lookup per console
request, never one on the API's path; a console request whose session cannot be checked (the
database unreachable) is refused. Notices (shown once, on the next page) travel in a signed
cookie of their own beside the redirect that follows a change, so any worker can show them.

Every state change is a POST whose form carries the session's CSRF token; the login form,
before any session exists, carries a token that must equal its own short-lived cookie (double
submit). All cookies are Secure, HttpOnly, SameSite=Strict and scoped to /ui. Browsers treat
http://localhost and 127.0.0.1 as secure contexts, so Secure cookies work there without TLS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service.store import credentials
from service.store.db import Database

SESSION_COOKIE = "conscience_session"
LOGIN_CSRF_COOKIE = "conscience_login_csrf"
NOTICES_COOKIE = "conscience_notices"
SESSION_TTL_S = 8 * 3600.0
LOGIN_FORM_TTL_S = 600
NOTICES_TTL_S = 60
COOKIE_PATH = "/ui"
_KEY_CONTEXT = b"conscience console session v1"


def new_token() -> str:
    """256 random bits, URL-safe: session ids and CSRF tokens."""
    return secrets.token_urlsafe(32)


@dataclass(slots=True)
class Session:
    id: str
    csrf: str
    expires_at: float  # seconds since the epoch: every process reads the same clock
    notices: list[str] = field(default_factory=list)  # shown once, on the next page

    def pop_notices(self) -> list[str]:
        notices, self.notices = self.notices, []
        return notices


class Signer:
    """Signs and checks small JSON payloads under a key derived from the admin key."""

    def __init__(self, admin_key: str) -> None:
        self._key = hmac.new(admin_key.encode(), _KEY_CONTEXT, hashlib.sha256).digest()

    def sign(self, payload: dict[str, Any]) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._mac(body)}"

    def verify(self, token: str | None) -> dict[str, Any] | None:
        if not token or token.count(".") != 1:
            return None
        body, mac = token.split(".")
        if not hmac.compare_digest(mac.encode(), self._mac(body).encode()):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int | float):
            return None
        return payload if payload["exp"] > time.time() else None

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def session_hash(session_id: str) -> str:
    """How a logged-out session is named in the database: not by the bearer secret itself."""
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    def __init__(self, admin_key: str, ttl_s: float = SESSION_TTL_S) -> None:
        self._signer = Signer(admin_key)
        self._ttl_s = ttl_s

    def create(self) -> tuple[str, Session]:
        session = Session(id=new_token(), csrf=new_token(), expires_at=time.time() + self._ttl_s)
        token = self._signer.sign({"sid": session.id, "csrf": session.csrf, "exp": session.expires_at})
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The session a token signs, unexpired; whether it was logged out is `active`'s question."""
        payload = self._signer.verify(token)
        if payload is None or not isinstance(payload.get("sid"), str) or not isinstance(payload.get("csrf"), str):
            return None
        return Session(id=payload["sid"], csrf=payload["csrf"], expires_at=payload["exp"])

    async def active(self, db: Database, token: str | None) -> Session | None:
        """The token's session unless it was logged out, on any worker or replica. Raises the
        database's error when that cannot be told."""
        session = self.get(token)
        if session is None:
            return None
        async with db.sessions() as transaction:
            if await credentials.console_session_revoked(transaction, session_hash(session.id)):
                return None
        return session

    async def end(self, db: Database, token: str | None) -> None:
        """Log the token's session out everywhere (a token that signs none: nothing to do)."""
        session = self.get(token)
        if session is None:
            return
        async with db.sessions.begin() as transaction:
            await credentials.revoke_console_session(
                transaction, session_hash(session.id), datetime.fromtimestamp(session.expires_at, UTC)
            )

    def notices_cookie(self, session: Session) -> str:
        return self._signer.sign({"sid": session.id, "notices": session.notices, "exp": time.time() + NOTICES_TTL_S})

    def read_notices(self, session: Session, cookie: str | None) -> list[str]:
        payload = self._signer.verify(cookie)
        if payload is None or payload.get("sid") != session.id:
            return []
        return [str(notice) for notice in payload.get("notices") or []]


def sessions(request: Request) -> SessionStore:
    """A store for the app's admin key (the console is enabled only with one)."""
    key = request.app.state.settings.security.admin_key
    if key is None:
        raise RuntimeError("the console needs an admin key")
    return SessionStore(key.get_secret_value())


async def current(request: Request, db: Database) -> Session | None:
    store = sessions(request)
    session = await store.active(db, request.cookies.get(SESSION_COOKIE))
    if session is not None:
        session.notices = store.read_notices(session, request.cookies.get(NOTICES_COOKIE))
    return session


def redirect(request: Request, session: Session, url: str) -> Response:
    """The 303 after a change, carrying the session's notices to whichever worker shows them."""
    response = RedirectResponse(url, status_code=303)
    if session.notices:
        set_cookie(response, NOTICES_COOKIE, sessions(request).notices_cookie(session), NOTICES_TTL_S)
    return response


def shown(request: Request, response: Response) -> Response:
    """A page that showed the notices: they are not shown again."""
    if NOTICES_COOKIE in request.cookies:
        clear_cookie(response, NOTICES_COOKIE)
    return response


def tokens_match(sent: str | None, expected: str | None) -> bool:
    if not sent or not expected:
        return False
    return hmac.compare_digest(sent.encode(), expected.encode())


def set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=COOKIE_PATH,
        secure=True, httponly=True, samesite="strict",
    )


def clear_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path=COOKIE_PATH, secure=True, httponly=True, samesite="strict")
