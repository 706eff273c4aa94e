"""Connection settings of `Database` on each dialect."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.store.db import Database
from service.store.models import Base
from tests.store.tcp_proxy import TcpProxy


async def test_ping_reaches_the_database(db: Database) -> None:
    await db.ping()


async def test_ping_raises_when_unreachable() -> None:
    closed = Database("postgresql+asyncpg://postgres@127.0.0.1:9/test", connect_timeout_s=2.0)
    try:
        with pytest.raises(OSError):
            await closed.ping()
    finally:
        await closed.dispose()


async def test_sqlite_file_gets_its_directory_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "store.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        assert db.is_sqlite
        async with db.engine.connect() as connection:
            assert (await connection.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await connection.execute(text("PRAGMA busy_timeout"))).scalar() == 30_000
        assert path.exists()
    finally:
        await db.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_search_path_in_the_url_selects_the_schema(db: Database, db_url: str) -> None:
    assert not db.is_sqlite
    schema = db_url.rsplit("search_path=", 1)[1]
    async with db.engine.connect() as connection:
        assert (await connection.execute(text("SELECT current_schema()"))).scalar() == schema
        tables = await connection.execute(
            text("SELECT count(*) FROM information_schema.tables WHERE table_schema = :schema"),
            {"schema": schema},
        )
        assert tables.scalar() == len(Base.metadata.tables)  # every table, in this schema


async def test_sqlite_files_are_private(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'new' / 'conscience.db'}")
    try:
        await db.create_all()
        async with db.engine.connect() as connection:  # WAL mode: -wal and -shm appear
            await connection.execute(text("SELECT 1 FROM checks"))
            modes = {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "new").iterdir()}
    finally:
        await db.dispose()
    assert modes == {"conscience.db": 0o600, "conscience.db-shm": 0o600, "conscience.db-wal": 0o600}


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_a_silent_server_ends_waits_after_the_timeouts(db_url: str) -> None:
    target = make_url(db_url)
    network = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    await network.start()
    db = Database(
        target.set(port=network.port).render_as_string(hide_password=False),
        connect_timeout_s=0.5, command_timeout_s=0.5,
    )
    try:
        await db.ping()  # a pooled connection, about to go silent
        network.blackhole()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await db.ping()  # the pooled connection's statement, then a new connection
        await db.dispose()
        assert time.monotonic() - started < 3.0
    finally:
        await network.stop()
