"""The admin test app (tests/admin/conftest.py) with the console mounted, over httpx's ASGI
transport at https:// (the console's cookies are Secure; httpx keeps those for https only)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from service.api.ui.api_router import router as ui_router
from service.security.cache import ApiKeyCache
from service.settings import Settings
from service.store.db import Database
from service.store.writer import RecordWriter
from tests.admin.conftest import ADMIN_KEY, build_app, keys, settings, writer  # noqa: F401  (pytest fixtures)
from tests.store.databases import db, db_url, empty_db  # noqa: F401  (pytest fixtures)


@pytest.fixture
def app(settings: Settings, db: Database, keys: ApiKeyCache, writer: RecordWriter) -> FastAPI:  # noqa: F811
    app = build_app(settings, db, keys, writer)
    app.include_router(ui_router)
    return app


@pytest.fixture
async def browser(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a cookie jar, like a browser, not yet logged in."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://test") as client:
        yield client


def csrf_of(page: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


async def log_in(client: httpx.AsyncClient, key: str = ADMIN_KEY) -> httpx.Response:
    form = await client.get("/ui/login")
    return await client.post("/ui/login", data={"csrf": csrf_of(form), "key": key})


@pytest.fixture
async def console(browser: httpx.AsyncClient) -> httpx.AsyncClient:
    """Logged in."""
    response = await log_in(browser)
    assert response.status_code == 303, response.text
    return browser
