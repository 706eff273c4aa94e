"""A minimal app with the real store, key cache and writer, served over httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI

from service.api.admin.api_router import router as admin_router
from service.errors import install_error_handlers
from service.security.auth import require_client
from service.security.cache import ApiKeyCache, ClientIdentity
from service.settings import Settings
from service.store.db import Database
from service.store.records import Record
from service.store.writer import RecordWriter
from tests.store.databases import db, db_url, empty_db  # noqa: F401  (pytest fixtures)

ADMIN_KEY = "admin-secret-for-tests"


def build_app(settings: Settings, db: Database, keys: ApiKeyCache, writer: RecordWriter) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(admin_router)

    @app.get("/v1/whoami")
    async def whoami(
        client: ClientIdentity | None = Depends(require_client),
    ) -> dict[str, str | None]:
        return {"id": client.id if client else None, "name": client.name if client else None}

    app.state.settings = settings
    app.state.db = db
    app.state.keys = keys
    app.state.writer = writer
    return app


@pytest.fixture
def settings() -> Settings:
    return Settings(admin_key=ADMIN_KEY, api_key_refresh_s=0.05)


@pytest.fixture
async def writer(db: Database, tmp_path: Path) -> AsyncIterator[RecordWriter]:
    writer = RecordWriter(
        db, tmp_path / "spool.jsonl",
        batch_size=64, flush_interval_s=0.01, retry_interval_s=0.05, queue_size=10_000,
        max_hold_s=5.0, shutdown_timeout_s=5.0,
    )
    await writer.start()
    yield writer
    await writer.aclose()


@pytest.fixture
async def keys(db: Database, settings: Settings) -> AsyncIterator[ApiKeyCache]:
    cache = ApiKeyCache(db, settings.security.api_key_refresh_s)
    await cache.start()
    yield cache
    await cache.aclose()


@pytest.fixture
def app(settings: Settings, db: Database, keys: ApiKeyCache, writer: RecordWriter) -> FastAPI:
    return build_app(settings, db, keys, writer)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture
async def admin(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=headers
    ) as client:
        yield client


async def store(writer: RecordWriter, records: Sequence[Record]) -> None:
    """Persist through the real writer and wait until the rows are committed."""
    for record in records:
        writer.submit(record)
    await writer.aclose()
    assert writer.spool_depth == 0
