"""The console over HTTP on both dialects: login, cookies, CSRF, headers, review, pages."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from service.api.ui.api_router import router as ui_router
from service.api.ui.session import SessionStore, session_hash
from service.security.cache import ApiKeyCache
from service.settings import Settings
from service.store import repository
from service.store.db import Database
from service.store.models import ConsoleSessionRevocation
from service.store.records import CheckRecord, TripleRecord
from service.store.writer import RecordWriter
from tests.admin.conftest import ADMIN_KEY, build_app, store
from tests.store.factories import make_check, make_triple
from tests.ui.conftest import csrf_of, log_in


@contextlib.asynccontextmanager
async def db_url_database(url: str) -> AsyncIterator[Database]:
    database = Database(url)
    try:
        yield database
    finally:
        await database.dispose()


PAGES = ["/ui/review", "/ui/blocked", "/ui/dashboard", "/ui/adapters"]


def scored_triple(index: int, score: float, **overrides: object) -> TripleRecord:
    details = {
        "rejected_verdict": {"label": "unethical", "score": score},
        "chosen_verdict": {"label": "ethical", "score": 0.05},
        "attempts": 2,
        "discarded_drafts": [{"text": f"draft that failed {index}", "reason": "judge", "score": 0.8}],
    }
    return make_triple(index, details=details, **overrides)


def blocked_check(index: int) -> CheckRecord:
    return make_check(
        index, verdict="unethical", score=0.93, attempts=2, repair_ms=40.0,
        prompt=[{"role": "user", "content": f"blocked question {index}"}],
        answer=f"blocked answer text {index}",
        drafts=[{"text": "a draft the judge refused", "reason": "judge", "score": 0.7}],
    )


async def statuses(db: Database) -> dict[str, str]:
    async with db.sessions() as session:
        rows = await repository.list_triples(session, repository.TripleFilter(), limit=100)
    return {row.id: row.status for row in rows}


def assert_hardened(response: httpx.Response) -> None:
    assert response.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"


async def test_pages_need_a_session(browser: httpx.AsyncClient) -> None:
    for path in PAGES:
        response = await browser.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/ui/login"
        assert_hardened(response)
    refused = await browser.post("/ui/review", data={"ids": "x", "action": "approve"})
    assert refused.status_code == 401
    assert_hardened(refused)


async def test_login_sets_a_strict_session_cookie(browser: httpx.AsyncClient) -> None:
    form = await browser.get("/ui/login")
    assert form.status_code == 200
    assert_hardened(form)
    assert "secure" in form.headers["set-cookie"].lower()

    wrong = await log_in(browser, key="not-the-admin-key")
    assert wrong.status_code == 401 and "Incorrect admin key" in wrong.text
    assert "conscience_session" not in browser.cookies
    assert "Review" not in wrong.text  # no navigation, no console content

    right = await log_in(browser)
    assert right.status_code == 303 and right.headers["location"] == "/ui/review"
    cookie = next(c for c in right.headers.get_list("set-cookie") if c.startswith("conscience_session="))
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"secure", "httponly", "max-age", "path"} <= attributes
    assert "samesite=strict" in cookie.lower() and "path=/ui" in cookie.lower()
    page = await browser.get("/ui/review")
    assert page.status_code == 200
    assert_hardened(page)


async def test_login_without_its_csrf_cookie_is_refused(browser: httpx.AsyncClient) -> None:
    form = await browser.get("/ui/login")
    browser.cookies.clear()
    response = await browser.post("/ui/login", data={"csrf": csrf_of(form), "key": ADMIN_KEY})
    assert response.status_code == 403
    assert "conscience_session" not in browser.cookies


async def test_review_needs_the_csrf_token(
    console: httpx.AsyncClient, writer: RecordWriter, db: Database
) -> None:
    triple = scored_triple(0, 0.9)
    await store(writer, [triple])
    page = await console.get("/ui/review")
    assert "harmful answer 0" in page.text and "repaired answer 0" in page.text
    assert "draft that failed 0" in page.text and "0.900" in page.text

    forged = await console.post("/ui/review", data={"ids": triple.id, "action": "approve"})
    assert forged.status_code == 403
    assert (await statuses(db))[triple.id] == "pending"

    done = await console.post(
        "/ui/review", data={"ids": triple.id, "action": "approve", "csrf": csrf_of(page)}
    )
    assert done.status_code == 303 and done.headers["location"].startswith("/ui/review?")
    assert (await statuses(db))[triple.id] == "approved"
    after = await console.get(done.headers["location"])
    assert "Approved 1 triple." in after.text and "No triple matches" in after.text


async def test_bulk_review_of_a_filtered_list(
    console: httpx.AsyncClient, writer: RecordWriter, db: Database
) -> None:
    triples = [scored_triple(i, score) for i, score in enumerate([0.55, 0.7, 0.95, 0.99])]
    await store(writer, triples)
    page = await console.get("/ui/review", params={"min_score": "0.9"})
    listed = set(re.findall(r'name="ids" value="([0-9a-f]{32})"', page.text))
    assert listed == {triples[2].id, triples[3].id}
    form = {"ids": sorted(listed), "action": "reject", "csrf": csrf_of(page), "min_score": "0.9"}
    done = await console.post("/ui/review", data=form)
    assert "min_score=0.9" in done.headers["location"]
    assert await statuses(db) == {
        triples[0].id: "pending", triples[1].id: "pending",
        triples[2].id: "rejected", triples[3].id: "rejected",
    }


async def test_bad_filters_are_named_not_fatal(console: httpx.AsyncClient) -> None:
    page = await console.get("/ui/review", params={"min_score": "lots", "since": "yesterday"})
    assert page.status_code == 200
    assert "min_score: &#39;lots&#39; is not valid" in page.text


async def test_skip_moves_to_the_next_triple(console: httpx.AsyncClient, writer: RecordWriter) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    await store(writer, [scored_triple(i, 0.9, created_at=t0 + timedelta(minutes=i)) for i in range(2)])
    first = await console.get("/ui/review")
    assert "harmful answer 1" in first.text  # newest first
    skip = re.search(r'id="skip" class="button" href="([^"]+)"', first.text)
    assert skip
    second = await console.get(skip.group(1).replace("&amp;", "&"))
    assert "Triple 2 of 2" in second.text and "harmful answer 0" in second.text


async def test_blocked_answers_are_shown_with_their_text(
    console: httpx.AsyncClient, writer: RecordWriter
) -> None:
    await store(writer, [blocked_check(1), make_check(2, verdict="ethical")])
    page = await console.get("/ui/blocked")
    assert "blocked answer text 1" in page.text and "blocked question 1" in page.text
    assert "a draft the judge refused" in page.text
    assert page.text.count('class="blocked"') == 1


async def test_dashboard_draws_its_charts(console: httpx.AsyncClient, writer: RecordWriter) -> None:
    checks = [make_check(i, verdict="ethical", score=0.1, threshold=0.236) for i in range(3)]
    checks += [make_check(10, verdict="unethical", score=0.9, repaired=True, attempts=1, threshold=0.236),
               blocked_check(11)]
    checks += [make_check(12, verdict="unchecked", score=None, framework="wwjd"),
               make_check(13, verdict="ethical", score=0.2, framework="wwjd", threshold=0.255)]
    await store(writer, checks)
    page = await console.get("/ui/dashboard")
    assert page.status_code == 200
    assert page.text.count("<svg") >= 4  # verdicts ×2 frameworks, scores, rates, latency
    values = [float(v) for v in re.findall(r'data-value="([^"]+)"', page.text)]
    assert values and max(values) > 0
    # One line per threshold the range's checks were flagged at (calibrated per framework):
    # not the configured default, which the checks here were not judged at.
    assert page.text.count('class="marker"') == 2
    assert ">three_laws 0.236</text>" in page.text and ">wwjd 0.255</text>" in page.text
    assert "flagged at (three_laws 0.236, wwjd 0.255)" in page.text
    only_wwjd = await console.get("/ui/dashboard?framework=wwjd")
    assert only_wwjd.text.count('class="marker"') == 1 and ">wwjd 0.255</text>" in only_wwjd.text
    assert "50.0%" in page.text  # one of two flagged answers repaired, one blocked


async def test_logout_ends_the_session(console: httpx.AsyncClient) -> None:
    page = await console.get("/ui/review")
    cookie = console.cookies["conscience_session"]
    await console.post("/ui/logout", data={"csrf": csrf_of(page)})
    console.cookies.set("conscience_session", cookie, domain="test", path="/ui")
    assert (await console.get("/ui/review")).status_code == 303


async def test_a_logout_through_one_worker_ends_the_session_on_every_other(
    app: FastAPI, console: httpx.AsyncClient, settings: Settings, db_url: str, writer: RecordWriter,
    keys: ApiKeyCache,
) -> None:
    """Two apps with their own engines on one database, as two workers or replicas are."""
    other_db = Database(db_url)
    other = build_app(settings, other_db, keys, writer)
    other.include_router(ui_router)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="https://test") as worker:
            cookie = console.cookies["conscience_session"]
            sent = {"cookie": f"conscience_session={cookie}"}  # the cookie, copied to the other worker
            page = await worker.get("/ui/review", headers=sent)
            assert page.status_code == 200  # the session is valid on the other worker
            logout = await worker.post("/ui/logout", data={"csrf": csrf_of(page)}, headers=sent)
            assert logout.status_code == 303  # logged out there ...
            assert (await console.get("/ui/review")).status_code == 303  # ... and so here too
            assert (await worker.get("/ui/review", headers=sent)).status_code == 303
            assert (await log_in(console)).status_code == 303  # a new session works on both
            fresh = {"cookie": f"conscience_session={console.cookies['conscience_session']}"}
            assert (await worker.get("/ui/review", headers=fresh)).status_code == 200
    finally:
        await other_db.dispose()
    async with db_url_database(db_url) as database, database.sessions() as session:
        stored = list(await session.scalars(select(ConsoleSessionRevocation.session_hash)))
    assert stored == [session_hash(SessionStore(ADMIN_KEY).get(cookie).id)]  # its hash, not the id


async def test_a_session_that_cannot_be_checked_is_refused(app: FastAPI, console: httpx.AsyncClient) -> None:
    unreachable = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none", connect_timeout_s=1.0)
    app.state.db = unreachable
    try:
        page = await console.get("/ui/review")
        assert page.status_code == 503 and "cannot be checked" in page.text
    finally:
        await unreachable.dispose()


@pytest.mark.parametrize("path", ["/ui/login", "/ui/review"])
async def test_console_is_disabled_without_an_admin_key(
    browser: httpx.AsyncClient, settings: Settings, path: str
) -> None:
    settings.security.admin_key = None
    response = await browser.get(path)
    assert response.status_code == 403 and "disabled" in response.text


async def test_static_files_are_a_fixed_list(browser: httpx.AsyncClient) -> None:
    script = await browser.get("/ui/static/console.js")
    assert script.status_code == 200 and "keydown" in script.text
    assert_hardened(script)
    assert (await browser.get("/ui/static/..%2Fapi_router.py")).status_code == 404


async def test_blocked_answers_are_marked_right_or_wrong(
    console: httpx.AsyncClient, writer: RecordWriter, db: Database
) -> None:
    first, second = blocked_check(1), blocked_check(2)
    await store(writer, [first, second])
    page = await console.get("/ui/blocked")
    assert page.text.count('name="action" value="right"') == 2 and "not reviewed" in page.text

    forged = await console.post("/ui/blocked", data={"ids": first.id, "action": "wrong"})
    assert forged.status_code == 403

    form = {"ids": first.id, "action": "wrong", "csrf": csrf_of(page), "review": "unreviewed",
            "framework": "three_laws"}
    done = await console.post("/ui/blocked", data=form)
    assert done.status_code == 303 and done.headers["location"].startswith("/ui/blocked?")
    assert "review=unreviewed" in done.headers["location"] and "framework=three_laws" in done.headers["location"]
    async with db.sessions() as session:
        rows = await repository.list_blocked(session, repository.CheckFilter(), limit=10)
    marked = {check.id: check.blocked_review for check in rows}
    assert marked == {first.id: "wrong", second.id: None}

    after = await console.get(done.headers["location"])
    assert "Marked 1 answer wrongly blocked." in after.text
    assert second.id in after.text and f'data-check-id="{first.id}"' not in after.text  # unreviewed only
    listed = await console.get("/ui/blocked", params={"review": "wrong"})
    assert f'data-check-id="{first.id}"' in listed.text and "marked wrongly blocked" in listed.text

    unknown = await console.post("/ui/blocked", data={"ids": "nope", "action": "right", "csrf": csrf_of(page)})
    assert "No blocked answer with id nope: nothing changed." in (await console.get(unknown.headers["location"])).text
