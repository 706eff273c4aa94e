"""The async engine and session factory, with the per-dialect settings the store relies on.

SQLite gets WAL and a busy timeout so the background writer, the admin API and the trainer
can share one file; a database file it creates is 0600 (it holds prompts and answers; SQLite
gives its -wal and -shm files the database file's mode). PostgreSQL gets a connect timeout and
an optional command timeout (asyncpg's, kept on the client side, so a server that accepts
connections and never answers ends a wait too); closing the pool is bounded too. PostgreSQL
URLs may carry `?search_path=SCHEMA`: asyncpg has no such connect argument, so it is turned
into a server setting (used to deploy into a schema and to isolate tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from service.store.models import Base
from service.store.spool import FILE_MODE

log = logging.getLogger("conscience.store.db")

SQLITE_BUSY_TIMEOUT_S = 30.0


def engine_arguments(
    url: str, *, connect_timeout_s: float, command_timeout_s: float | None
) -> tuple[URL, dict[str, Any]]:
    """The URL to hand SQLAlchemy and the `connect_args` it needs for our dialect settings."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _create_database_file(parsed)
        return parsed, {"timeout": SQLITE_BUSY_TIMEOUT_S}
    connect_args: dict[str, Any] = {
        "timeout": connect_timeout_s, "command_timeout": command_timeout_s,
    }
    search_path = parsed.query.get("search_path")
    if search_path:
        connect_args["server_settings"] = {"search_path": str(search_path)}
        parsed = parsed.difference_update_query(["search_path"])
    return parsed, connect_args


def shown_url(url: str) -> str:
    """The URL as logs and messages show it: its password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def error_reason(exc: BaseException) -> str:
    """What a database error says to an operator: the driver's own first line ("no such table:
    triples", "Connect call failed"), not the SQL statement SQLAlchemy appends."""
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]


def _create_database_file(url: URL) -> None:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        # An empty file is an empty SQLite database; creating it here fixes its mode.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))


def _enable_sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.close()


class Database:
    """One engine per process; `sessions()` opens an `AsyncSession` (expire_on_commit=False)."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = 10.0,
        command_timeout_s: float | None = None,
    ) -> None:
        engine_url, connect_args = engine_arguments(
            url, connect_timeout_s=connect_timeout_s, command_timeout_s=command_timeout_s
        )
        self.is_sqlite = engine_url.get_backend_name() == "sqlite"
        self._connect_timeout_s = connect_timeout_s
        self.engine: AsyncEngine = create_async_engine(
            engine_url, connect_args=connect_args, pool_pre_ping=not self.is_sqlite
        )
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _enable_sqlite_wal)
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def create_all(self) -> None:
        """Create every table from the models. Tests only: production runs the migrations."""
        async with self.engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)

    async def dispose(self) -> None:
        """Close the pool, giving up (on a server that does not answer) after the connect
        timeout: each silent connection would otherwise wait out the command timeout in turn."""
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await self.engine.dispose()
        except TimeoutError:
            log.warning("database connections not closed within %.1fs", self._connect_timeout_s)
