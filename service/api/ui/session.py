"""Console sessions: an opaque cookie for a server-side session, and CSRF tokens.

Logging in with the admin key creates a `Session` held in this process (a restart or a
logout ends it; the cookie is a random token that means nothing anywhere else). Every state
change is a POST whose form carries the session's CSRF token; the login form, before any
session exists, carries a token that must equal its own short-lived cookie (double submit).
All cookies are Secure, HttpOnly, SameSite=Strict and scoped to /ui. Browsers treat
http://localhost and 127.0.0.1 as secure contexts, so Secure cookies work there without TLS.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "conscience_session"
LOGIN_CSRF_COOKIE = "conscience_login_csrf"
SESSION_TTL_S = 8 * 3600.0
LOGIN_FORM_TTL_S = 600
COOKIE_PATH = "/ui"


def new_token() -> str:
    """256 random bits, URL-safe: session ids and CSRF tokens."""
    return secrets.token_urlsafe(32)


@dataclass(slots=True)
class Session:
    csrf: str
    expires_at: float
    notices: list[str] = field(default_factory=list)  # shown once, on the next page

    def pop_notices(self) -> list[str]:
        notices, self.notices = self.notices, []
        return notices


class SessionStore:
    def __init__(self, ttl_s: float = SESSION_TTL_S) -> None:
        self._ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}

    def create(self) -> tuple[str, Session]:
        now = time.monotonic()
        # Expired sessions are dropped here: only a holder of the admin key makes new ones.
        self._sessions = {t: s for t, s in self._sessions.items() if s.expires_at > now}
        token = new_token()
        session = Session(csrf=new_token(), expires_at=now + self._ttl_s)
        self._sessions[token] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        session = self._sessions.get(token) if token else None
        if session is None or session.expires_at <= time.monotonic():
            return None
        return session

    def end(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)


def sessions(request: Request) -> SessionStore:
    """The app's store, made on first use so the console needs no start-up wiring."""
    state = request.app.state
    store: SessionStore | None = getattr(state, "ui_sessions", None)
    if store is None:
        store = state.ui_sessions = SessionStore()
    return store


def current(request: Request) -> Session | None:
    return sessions(request).get(request.cookies.get(SESSION_COOKIE))


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
