"""A database that does not answer costs no records: they leave memory for the spool within
the hold bound, and SIGTERM ends within the shutdown timeout with every record kept."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.store.db import Database
from tests.store.tcp_proxy import TcpProxy
from tests.store.test_writer import has_stored, mixed_records, new_writer, stored_ids, wait_until


@contextlib.asynccontextmanager
async def write_locked(db: Database, db_url: str) -> AsyncIterator[None]:
    """Another session holds a lock that makes every insert wait (busy, not down)."""
    if db.is_sqlite:
        locker = sqlite3.connect(make_url(db_url).database or "", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            locker.close()
        return
    async with db.engine.connect() as connection:
        await connection.execute(text("LOCK TABLE checks, triples IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            await connection.rollback()


async def test_records_leave_memory_for_the_spool_while_the_database_hangs(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    writer = new_writer(db, tmp_path / "spool.jsonl", max_hold_s=0.3)
    await writer.start()
    records = mixed_records(40)
    try:
        async with write_locked(db, db_url):
            started = time.monotonic()
            for record in records:
                writer.submit(record)
            await wait_until(lambda: writer.spool_depth == len(records), timeout_s=5)
            assert time.monotonic() - started < 3
        await wait_until(lambda: has_stored(db, records))
    finally:
        await writer.aclose()
    assert sorted(await stored_ids(db)) == sorted(record.id for record in records)


SHUTDOWN_TIMEOUT_S = 1.5

# The proxy's shutdown order (writer, then database), with the timeouts `serve` gets as settings.
TERMINATED_WRITER = textwrap.dedent(
    f"""
    import asyncio, signal, sys
    from pathlib import Path
    from service.store.db import Database
    from service.store.writer import RecordWriter
    from tests.store.test_writer import mixed_records

    async def main(url, spool):
        db = Database(url, connect_timeout_s=0.5, command_timeout_s=1.0)
        writer = RecordWriter(db, Path(spool), batch_size=8, flush_interval_s=0.01,
                              retry_interval_s=0.05, queue_size=1000, max_hold_s=0.5,
                              shutdown_timeout_s={SHUTDOWN_TIMEOUT_S})
        await writer.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        for start in (0, 10):  # 10 while the database answers, then 30 once it hangs
            await asyncio.to_thread(sys.stdin.readline)
            for record in mixed_records(10 if start == 0 else 30, start=start):
                writer.submit(record)
                print(record.id, flush=True)
            print("submitted", flush=True)
        await stop.wait()
        await writer.aclose()
        await db.dispose()
        print("lost", writer.lost, flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_sigterm_with_a_blackholed_database_ends_in_time_and_loses_nothing(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    target = make_url(db_url)
    network = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    await network.start()
    spool_path = tmp_path / "spool.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", TERMINATED_WRITER,
        target.set(port=network.port).render_as_string(hide_password=False), str(spool_path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        ids = await _submit(process)
        await wait_until(lambda: _stored_count(db, len(ids)))  # the database answered these

        network.blackhole()
        ids += await _submit(process)
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        output, _ = await asyncio.wait_for(process.communicate(), 20)
        took = time.monotonic() - started
    finally:
        if process.returncode is None:
            process.kill()
        await network.stop()
    assert process.returncode == 0
    assert output.decode().split() == ["lost", "0"]
    # The shutdown timeout, then closing a silent pool (the command timeout), and slack.
    assert took < SHUTDOWN_TIMEOUT_S + 1.0 + 2.0, took

    successor = new_writer(db, spool_path)
    await successor.start()
    await successor.aclose()
    assert sorted(await stored_ids(db)) == sorted(ids)


async def _submit(process: asyncio.subprocess.Process) -> list[str]:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(b"go\n")
    await process.stdin.drain()
    ids = []
    while (line := (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()) != (
        "submitted"
    ):
        assert line, "writer process exited early"
        ids.append(line)
    return ids


async def _stored_count(db: Database, count: int) -> bool:
    return len(await stored_ids(db)) == count
