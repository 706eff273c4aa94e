"""Connection settings of `Database` on each dialect."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from service.store.db import Database


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
        assert tables.scalar() == 4
