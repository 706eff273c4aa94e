"""One training run at a time per database.

PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) on a dedicated connection
held for the whole run. The server drops it when that session ends, so a killed trainer never
leaves a stale lock. The connection runs in autocommit: an open transaction would sit "idle in
transaction" for hours and could be cut by `idle_in_transaction_session_timeout`, silently
releasing the lock.

SQLite: an exclusive `flock` on `<database file>.train-lock`. This is the same guarantee by the
kernel: the lock belongs to the open file and is released when the process exits, however it
exits (SIGKILL included), so there is no lease to expire and no stale row to clean up. Two
opens of the file conflict even inside one process. It is correct because every process that
uses a SQLite database must run on the host that holds the file (SQLite over a network
filesystem is unsupported anyway), so all trainers of one database see the same lock file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from sqlalchemy import text

from service.store.db import Database

# Any fixed 64-bit key works; a hash of the purpose will not collide with another
# application's advisory locks by accident.
ADVISORY_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"conscience-trainer").digest()[:8], "big", signed=True
)


class TrainingLockHeld(Exception):
    """Another training run holds the lock of this database."""


def sqlite_lock_path(db: Database) -> Path:
    database = db.engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise ValueError(
            "the trainer needs a SQLite database file shared with the proxy, not an in-memory one"
        )
    return Path(database).expanduser().resolve().with_name(Path(database).name + ".train-lock")


@asynccontextmanager
async def training_lock(db: Database) -> AsyncIterator[None]:
    """Hold the database's training lock for the block; raise TrainingLockHeld if taken."""
    if db.is_sqlite:
        with _file_lock(sqlite_lock_path(db)):
            yield
        return
    async with _advisory_lock(db):
        yield


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingLockHeld(f"another training run holds {path}") from None
        yield
    finally:
        os.close(descriptor)  # closing the only descriptor releases the flock


@asynccontextmanager
async def _advisory_lock(db: Database) -> AsyncIterator[None]:
    connection = await db.engine.connect()
    try:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        acquired = await connection.scalar(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
        )
        if not acquired:
            raise TrainingLockHeld("another training run holds this database's advisory lock")
        try:
            yield
        finally:
            await connection.execute(
                text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
    finally:
        await connection.close()
