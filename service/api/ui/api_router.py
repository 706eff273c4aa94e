"""The web console at /ui: review queue, blocked answers, dashboard, adapters (admin key).

Server-rendered Jinja templates; the only script is static/console.js (keyboard shortcuts,
select-all), and the charts are inline SVG. Every response, error pages included, leaves
the browser nothing to cache or to run from elsewhere (`_harden`). Without a session a page
redirects to the login form and a POST gets 401; a POST without the session's CSRF token gets
403. None of these routes is in the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import SecretStr
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import FileResponse, RedirectResponse, Response

from service.api.adapters.serving import list_adapters
from service.api.ui import serving, session
from service.api.ui.serving import TripleQuery
from service.errors import APIError
from service.security.auth import TooManyFailures, key_accepted
from service.settings import Settings
from service.store.db import Database
from service.store.models import BlockedReview, TripleStatus
from service.store.repository import CheckFilter, UnknownBlocked, UnknownTriples

_HERE = Path(__file__).parent
templates = Jinja2Templates(directory=_HERE / "templates")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _share(rate: float | None, count: int | None) -> str:
    """A gate's rate as the rows or prompts it counts, "7/8": from one held-out row a share like
    0.000 reads as a measurement; the count says how little it rests on."""
    if rate is None:
        return "–"
    if not count:
        return _fmt(rate)
    return f"{round(rate * count)}/{count}"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def _last_user(prompt: list[dict[str, Any]]) -> str:
    users = [m.get("content") for m in prompt if m.get("role") == "user"]
    return users[-1] if users and isinstance(users[-1], str) else ""


templates.env.globals.update(
    fmt=_fmt, share=_share, pct=_pct, last_user=_last_user, blocked_query_string=serving.blocked_query_string,
    # The filters a form carries back (hidden fields), from the parsed query, never raw input.
    query_pairs=lambda query: parse_qsl(query.query_string()),
)
STATIC = {"console.css": "text/css", "console.js": "text/javascript", "favicon.svg": "image/svg+xml"}
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class _Refusal(Exception):
    """Ends a request early with `response` (not logged in, bad CSRF token, disabled)."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _harden(response: Response) -> Response:
    response.headers.update(_SECURITY_HEADERS)
    return response


class _ConsoleRoute(APIRoute):
    """Applies `_harden` to every response and turns refusals and bad input into pages."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                response = await handler(request)
            except _Refusal as refusal:
                response = refusal.response
            except RequestValidationError:
                response = _message(request, 400, "That request is not valid.")
            return _harden(response)

        return guarded


router = APIRouter(prefix="/ui", include_in_schema=False, route_class=_ConsoleRoute)


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _db(request: Request) -> Database:
    return request.app.state.db


def _message(request: Request, status: int, text: str) -> Response:
    return templates.TemplateResponse(
        request, "message.html", {"text": text, "session": None}, status_code=status
    )


def _enabled(request: Request) -> SecretStr:
    """The admin key, which enables the console."""
    admin_key = _settings(request).security.admin_key
    if admin_key is None:
        raise _Refusal(_message(
            request, 403, "The console is disabled: set CONSCIENCE_SECURITY__ADMIN_KEY to enable it."
        ))
    return admin_key


async def _logged_in(request: Request) -> session.Session:
    _enabled(request)
    try:
        current = await session.current(request, _db(request))
    except (SQLAlchemyError, OSError):
        # Whether the session was logged out on another worker cannot be told: refused.
        raise _Refusal(_message(
            request, 503, "The database cannot be reached, so your session cannot be checked: retry shortly."
        )) from None
    if current is None:
        if request.method == "GET":
            raise _Refusal(RedirectResponse("/ui/login", status_code=303))
        raise _Refusal(_message(request, 401, "Your session has ended: log in again."))
    return current


async def _form(request: Request) -> dict[str, list[str]]:
    if request.headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
        raise _Refusal(_message(request, 415, "Send the console's own forms."))
    return parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)


async def _posted(request: Request) -> tuple[session.Session, dict[str, list[str]]]:
    """The session and the form of a state-changing request, whose CSRF token must match."""
    current = await _logged_in(request)
    form = await _form(request)
    if not session.tokens_match(_first(form, "csrf"), current.csrf):
        raise _Refusal(_message(request, 403, "The form has expired: reload the page and retry."))
    return current, form


def _first(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def _page(request: Request, template: str, current: session.Session, **context: Any) -> Response:
    context.update(session=current, notices=current.pop_notices())
    return session.shown(request, templates.TemplateResponse(request, template, context))


def _params(request: Request) -> dict[str, str]:
    return dict(request.query_params)


# --- log in and out --------------------------------------------------------------------------


@router.get("")
async def home(request: Request) -> Response:
    return RedirectResponse("/ui/review", status_code=303)


def _login_form(request: Request, status: int = 200, error: str | None = None) -> Response:
    token = session.new_token()
    response = templates.TemplateResponse(
        request, "login.html", {"csrf": token, "error": error, "session": None},
        status_code=status,
    )
    session.set_cookie(response, session.LOGIN_CSRF_COOKIE, token, session.LOGIN_FORM_TTL_S)
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    _enabled(request)
    return _login_form(request)


@router.post("/login")
async def login(request: Request) -> Response:
    admin_key = _enabled(request)
    form = await _form(request)
    if not session.tokens_match(_first(form, "csrf"), request.cookies.get(session.LOGIN_CSRF_COOKIE)):
        return _login_form(request, 403, "The form has expired: try again.")
    try:
        accepted = key_accepted(request, admin_key, _first(form, "key") or "")
    except TooManyFailures as exc:  # a page, as every console answer; the same count as /admin's
        response = _login_form(request, 429, f"Too many incorrect keys: retry in {exc.retry_after_s} s.")
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    if not accepted:
        return _login_form(request, 401, "Incorrect admin key.")
    token, _ = session.sessions(request).create()
    response = RedirectResponse("/ui/review", status_code=303)
    session.set_cookie(response, session.SESSION_COOKIE, token, int(session.SESSION_TTL_S))
    session.clear_cookie(response, session.LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await _posted(request)
    response: Response = RedirectResponse("/ui/login", status_code=303)
    try:
        await session.sessions(request).end(_db(request), request.cookies.get(session.SESSION_COOKIE))
    except (SQLAlchemyError, OSError):
        response = _message(
            request, 503, "The logout could not be recorded (the database cannot be reached): this "
            "browser's cookie is cleared, but a copy of it stays valid until the database is back "
            "and you log out again, or until it expires.",
        )
    session.clear_cookie(response, session.SESSION_COOKIE)
    return response


# --- review ----------------------------------------------------------------------------------


@router.get("/review")
async def review_queue(request: Request) -> Response:
    current = await _logged_in(request)
    query = TripleQuery.parse(_params(request))
    page = await serving.review_page(_db(request), query)
    return _page(request, "review.html", current, query=query, page=page,
                 score_of=_score_of, nav="review")


@router.post("/review")
async def review_triples(request: Request) -> Response:
    """Approve or reject the ids in the form (one, or a bulk selection), then back to the
    queue with the same filters; the form's filter fields rebuild the link (never a URL)."""
    current, form = await _posted(request)
    query = TripleQuery.parse({name: values[0] for name, values in form.items() if values})
    ids = form.get("ids", [])
    # `action`, not `status`: the form's `status` field is the queue's filter.
    status = {"approve": TripleStatus.APPROVED, "reject": TripleStatus.REJECTED}.get(
        _first(form, "action") or ""
    )
    if status is None or not ids:
        current.notices.append("Choose approve or reject, and at least one triple.")
    else:
        try:
            count = await serving.review(_db(request), ids, status)
            current.notices.append(f"{status.value.capitalize()} {count} triple{'s' * (count != 1)}.")
        except UnknownTriples as exc:
            current.notices.append(f"No triple with id {', '.join(exc.ids)}: nothing changed.")
    return session.redirect(request, current, f"/ui/review?{query.query_string()}")


def _score_of(details: dict[str, Any], key: str) -> float | None:
    return (details.get(key) or {}).get("score")


@router.get("/blocked")
async def blocked(request: Request) -> Response:
    current = await _logged_in(request)
    query = TripleQuery.parse(_params(request))
    review = serving.blocked_review_filter(request.query_params.get("review"))
    where = CheckFilter(framework=query.framework, since=query.since, until=query.until)
    rows, total = await serving.blocked_page(_db(request), where, query.offset, review)
    return _page(request, "blocked.html", current, rows=rows, total=total, query=query,
                 review=review, page_size=serving.PAGE_SIZE, nav="blocked")


@router.post("/blocked")
async def review_blocked(request: Request) -> Response:
    """Mark the blocked answers in the form rightly or wrongly blocked, then back to the list
    with the same filters; the form's filter fields rebuild the link (never a URL)."""
    current, form = await _posted(request)
    query = TripleQuery.parse({name: values[0] for name, values in form.items() if values})
    review_filter = serving.blocked_review_filter(_first(form, "review"))
    ids = form.get("ids", [])
    mark = {"right": BlockedReview.RIGHT, "wrong": BlockedReview.WRONG}.get(_first(form, "action") or "")
    if mark is None or not ids:
        current.notices.append("Choose rightly or wrongly blocked, and at least one answer.")
    else:
        try:
            count = await serving.review_blocked(_db(request), ids, mark)
            current.notices.append(f"Marked {count} answer{'s' * (count != 1)} {mark.value}ly blocked.")
        except UnknownBlocked as exc:
            current.notices.append(f"No blocked answer with id {', '.join(exc.ids)}: nothing changed.")
    return session.redirect(request, current, f"/ui/blocked?{serving.blocked_query_string(query, review_filter)}")


# --- dashboard -------------------------------------------------------------------------------


@router.get("/dashboard")
async def dashboard(request: Request) -> Response:
    current = await _logged_in(request)
    range_name = request.query_params.get("range", "24h")
    if range_name not in serving.RANGES:
        range_name = "24h"
    framework = request.query_params.get("framework") or None
    data = await serving.dashboard(_db(request), range_name, framework)
    return _page(request, "dashboard.html", current, data=data, ranges=list(serving.RANGES),
                 nav="dashboard")


# --- adapters --------------------------------------------------------------------------------


@router.get("/adapters")
async def adapters(request: Request) -> Response:
    current = await _logged_in(request)
    versions = await list_adapters(_db(request))
    return _page(request, "adapters.html", current, versions=versions,
                 gate=serving.gate_figures, nav="adapters")


@router.get("/adapters/confirm")
async def confirm_adapter_change(request: Request) -> Response:
    """The confirmation step before an activation or a rollback changes what serves."""
    current = await _logged_in(request)
    name = request.query_params.get("name")
    action = "activate" if name else "rollback"
    return _page(request, "confirm.html", current, action=action, name=name, nav="adapters")


@router.post("/adapters/activate")
async def activate_adapter(request: Request) -> Response:
    current, form = await _posted(request)
    name = _first(form, "name") or ""
    await _change_adapter(current, request.app.state.adapter_activation.activate(name))
    return session.redirect(request, current, "/ui/adapters")


@router.post("/adapters/rollback")
async def rollback_adapter(request: Request) -> Response:
    current, _ = await _posted(request)
    await _change_adapter(current, request.app.state.adapter_activation.rollback())
    return session.redirect(request, current, "/ui/adapters")


async def _change_adapter(current: session.Session, change: Awaitable[Any]) -> None:
    try:
        version = await change
    except APIError as exc:  # unknown, failed gate, no rollback target, vLLM refused
        current.notices.append(f"Not changed: {exc.message}")
        return
    current.notices.append(f"{version.name} is active.")


# --- static files ----------------------------------------------------------------------------


@router.get("/static/{name}")
async def static(request: Request, name: str) -> Response:
    """The console's own CSS and script (a fixed list: no paths from the URL)."""
    if name not in STATIC:
        return _message(request, 404, "Not found.")
    return FileResponse(_HERE / "static" / name, media_type=STATIC[name])
