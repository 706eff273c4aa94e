"""Client keys: generation, the cache, and when the proxy requires them."""

from __future__ import annotations

import asyncio
import hashlib
import logging

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from service.security.auth import OpenAccessAlarm, open_access_warning
from service.security.cache import ApiKeyCache
from service.settings import Settings
from service.store import credentials
from service.store.db import Database
from service.store.keys import generate_key
from service.store.writer import RecordWriter
from tests.admin.conftest import build_app
from tests.store.test_writer import wait_until


async def create_key(db: Database, name: str, **options: str) -> tuple[str, str]:
    async with db.sessions.begin() as session:
        key, plaintext = await credentials.create_api_key(session, name, **options)
    return key.id, plaintext


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert error["code"] == "invalid_api_key"
    assert error["message"].startswith("Incorrect API key provided")


def test_generated_keys_are_unique_and_hashed() -> None:
    (first, first_hash), (second, _) = generate_key(), generate_key()
    assert first.startswith("sk-cons-") and len(first) > 40
    assert first != second
    assert first_hash == hashlib.sha256(first.encode()).hexdigest()


async def test_open_until_the_first_key_exists(
    client: httpx.AsyncClient, db: Database, keys: ApiKeyCache, settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert (await client.get("/v1/whoami")).json() == {"id": None, "name": None}
    with caplog.at_level(logging.WARNING):
        warning = open_access_warning(settings, keys)
    assert warning is not None and "NOT REQUIRED" in warning
    assert warning in caplog.text

    key_id, plaintext = await create_key(db, "alice", mode="monitor")
    await wait_until(lambda: keys.has_keys)  # the background refresh picks it up

    assert_401(await client.get("/v1/whoami"))
    assert_401(await client.get("/v1/whoami", headers=bearer("sk-cons-guessed")))
    assert (await client.get("/v1/whoami", headers=bearer(plaintext))).json() == {
        "id": key_id, "name": "alice",
    }
    assert open_access_warning(settings, keys) is None
    identity = keys.lookup(plaintext)
    assert identity is not None and identity.mode == "monitor" and identity.framework is None


async def test_revoked_key_stops_working(
    client: httpx.AsyncClient, db: Database, keys: ApiKeyCache
) -> None:
    _, kept = await create_key(db, "kept")
    revoked_id, revoked = await create_key(db, "revoked")
    await keys.refresh()
    assert (await client.get("/v1/whoami", headers=bearer(revoked))).status_code == 200

    async with db.sessions.begin() as session:
        row = await credentials.revoke_api_key(session, revoked_id)
    assert row is not None and row.revoked_at is not None
    await wait_until(lambda: keys.lookup(revoked) is None)
    assert_401(await client.get("/v1/whoami", headers=bearer(revoked)))
    assert (await client.get("/v1/whoami", headers=bearer(kept))).status_code == 200


async def test_revoking_the_last_key_does_not_open_the_proxy(
    app: FastAPI, client: httpx.AsyncClient, db: Database, keys: ApiKeyCache, settings: Settings
) -> None:
    key_id, plaintext = await create_key(db, "only")
    await keys.refresh()
    async with db.sessions.begin() as session:
        await credentials.revoke_api_key(session, key_id)
    await keys.refresh()
    assert not keys.has_keys and keys.issued
    assert_401(await client.get("/v1/whoami"))
    assert_401(await client.get("/v1/whoami", headers=bearer(plaintext)))
    assert open_access_warning(settings, keys) is None

    app.state.settings = Settings(require_api_key=False)  # only the operator opens it again
    assert (await client.get("/v1/whoami")).json() == {"id": None, "name": None}


@pytest.mark.parametrize("interval_s", [0.0, 3600.0])
async def test_the_open_proxy_is_announced_at_refreshes_rate_limited(
    db: Database, settings: Settings, caplog: pytest.LogCaptureFixture, interval_s: float
) -> None:
    keys = ApiKeyCache(db, refresh_s=0.01, on_refresh=OpenAccessAlarm(settings, interval_s))

    def warnings() -> int:
        return sum("NOT REQUIRED" in record.getMessage() for record in caplog.records)

    with caplog.at_level(logging.WARNING, "conscience.security"):
        await keys.start()
        try:
            assert warnings() == 1  # at start-up
            await asyncio.sleep(0.15)  # many refreshes
        finally:
            await keys.aclose()
    assert warnings() > 2 if interval_s == 0 else warnings() == 1


async def test_explicit_setting_overrides_the_default(
    app: FastAPI, client: httpx.AsyncClient, db: Database, keys: ApiKeyCache
) -> None:
    app.state.settings = Settings(require_api_key=True)
    assert_401(await client.get("/v1/whoami"))  # required even with no key in the database

    _, plaintext = await create_key(db, "bob")
    await keys.refresh()
    app.state.settings = Settings(require_api_key=False)
    assert (await client.get("/v1/whoami")).json() == {"id": None, "name": None}
    assert (await client.get("/v1/whoami", headers=bearer(plaintext))).json()["name"] == "bob"
    assert open_access_warning(app.state.settings, keys) is not None


async def test_keys_outlive_a_database_outage(db: Database) -> None:
    _, plaintext = await create_key(db, "carol")
    keys = ApiKeyCache(db, refresh_s=60)
    await keys.refresh()
    async with db.engine.begin() as connection:
        await connection.execute(text("ALTER TABLE api_keys RENAME TO api_keys_offline"))
    with pytest.raises(DBAPIError):
        await keys.refresh()
    identity = keys.lookup(plaintext)
    assert identity is not None and identity.name == "carol"


async def test_unknown_key_state_is_refused_with_503(
    settings: Settings, writer: RecordWriter
) -> None:
    unreachable = Database("postgresql+asyncpg://postgres@127.0.0.1:9/test", connect_timeout_s=1.0)
    keys = ApiKeyCache(unreachable, refresh_s=60)
    await keys.start()
    try:
        assert not keys.loaded
        app = build_app(settings, unreachable, keys, writer)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/v1/whoami")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "keys_unavailable"
        assert open_access_warning(settings, keys) is None
    finally:
        await keys.aclose()
        await unreachable.dispose()
