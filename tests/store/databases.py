"""Database fixtures: every store test runs on SQLite and on PostgreSQL through the same code.

PostgreSQL tests get a fresh schema each (via `?search_path=`), dropped afterwards. When the
server at CONSCIENCE_TEST_PG_URL is unreachable they skip, unless CONSCIENCE_REQUIRE_POSTGRES=1
makes that a failure. Import the fixtures into a conftest to use them elsewhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from service.store.db import Database

PG_URL = os.environ.get(
    "CONSCIENCE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)

DIALECTS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


async def _require_postgres() -> None:
    server = Database(PG_URL, connect_timeout_s=3.0)
    try:
        await server.ping()
    except Exception as exc:
        reason = f"PostgreSQL at {PG_URL} is unreachable: {exc}"
        if os.environ.get("CONSCIENCE_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    finally:
        await server.dispose()


async def _execute(url: str, statement: str) -> None:
    server = Database(url)
    try:
        async with server.engine.begin() as connection:
            await connection.execute(text(statement))
    finally:
        await server.dispose()


def postgres_schema_url(schema: str) -> str:
    return f"{PG_URL}?search_path={schema}"


async def new_postgres_schema() -> str:
    schema = f"test_{uuid.uuid4().hex[:12]}"
    await _execute(PG_URL, f'CREATE SCHEMA "{schema}"')
    return schema


async def drop_postgres_schema(schema: str) -> None:
    await _execute(PG_URL, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=DIALECTS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database (no tables) of each dialect."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'db' / 'conscience.db'}"
        return
    await _require_postgres()
    schema = await new_postgres_schema()
    try:
        yield postgres_schema_url(schema)
    finally:
        await drop_postgres_schema(schema)


@pytest.fixture
async def empty_db(db_url: str) -> AsyncIterator[Database]:
    """A `Database` with no tables yet."""
    db = Database(db_url)
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
async def db(empty_db: Database) -> Database:
    """A `Database` with every table created."""
    await empty_db.create_all()
    return empty_db
