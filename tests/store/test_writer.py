"""The writer never loses an accepted record: DB outages, a full queue, restarts, bad data."""

from __future__ import annotations

import asyncio
import inspect
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select, text

from service.store.db import Database
from service.store.ingest import insert_records
from service.store.models import Check, Triple
from service.store.records import Record
from service.store.spool import Spool
from service.store.writer import RecordWriter
from tests.store.factories import make_check, make_triple


def new_writer(
    db: Database, spool_path: Path, *, queue_size: int = 10_000, max_hold_s: float = 5.0
) -> RecordWriter:
    return RecordWriter(
        db, spool_path, batch_size=16, flush_interval_s=0.02, retry_interval_s=0.05,
        queue_size=queue_size, max_hold_s=max_hold_s, shutdown_timeout_s=10.0,
    )


@pytest.fixture
async def writer(db: Database, tmp_path: Path) -> AsyncIterator[RecordWriter]:
    writer = new_writer(db, tmp_path / "spool.jsonl")
    await writer.start()
    yield writer
    await writer.aclose()


def mixed_records(count: int, start: int = 0) -> list[Record]:
    return [
        make_triple(index) if index % 3 == 0 else make_check(index)
        for index in range(start, start + count)
    ]


async def stored_ids(db: Database) -> list[str]:
    """Every stored id, duplicates kept (a duplicate would be a failed idempotence)."""
    async with db.sessions() as session:
        checks = (await session.scalars(select(Check.id))).all()
        triples = (await session.scalars(select(Triple.id))).all()
    return [*checks, *triples]


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], timeout_s: float = 10.0
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        outcome = condition()
        if await outcome if inspect.isawaitable(outcome) else outcome:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def has_stored(db: Database, records: list[Record]) -> bool:
    return sorted(await stored_ids(db)) == sorted(record.id for record in records)


async def take_tables_offline(db: Database) -> None:
    async with db.engine.begin() as connection:
        await connection.execute(text("ALTER TABLE checks RENAME TO checks_offline"))
        await connection.execute(text("ALTER TABLE triples RENAME TO triples_offline"))


async def bring_tables_back(db: Database) -> None:
    async with db.engine.begin() as connection:
        await connection.execute(text("ALTER TABLE checks_offline RENAME TO checks"))
        await connection.execute(text("ALTER TABLE triples_offline RENAME TO triples"))


async def test_records_reach_the_database_intact(db: Database, writer: RecordWriter) -> None:
    records = mixed_records(40)
    for record in records:
        writer.submit(record)
    await writer.aclose()

    assert sorted(await stored_ids(db)) == sorted(record.id for record in records)
    triple = next(record for record in records if record.kind == "triple")
    async with db.sessions() as session:
        stored = await session.get(Triple, triple.id)
    assert stored is not None
    assert (stored.prompt, stored.rejected, stored.chosen, stored.details) == (
        triple.prompt, triple.rejected, triple.chosen, triple.details,
    )
    assert stored.status == "pending"
    assert stored.created_at == triple.created_at


async def test_outage_spools_and_recovery_stores_each_record_once(
    db: Database, writer: RecordWriter
) -> None:
    before = mixed_records(10)
    for record in before:
        writer.submit(record)
    await wait_until(lambda: has_stored(db, before))

    await take_tables_offline(db)
    during = mixed_records(30, start=10)
    for record in during:
        writer.submit(record)
    await wait_until(lambda: writer.spool_depth == len(during))

    await bring_tables_back(db)
    await wait_until(lambda: writer.spool_depth == 0)
    after = mixed_records(5, start=40)
    for record in after:
        writer.submit(record)
    await writer.aclose()

    expected = [record.id for record in before + during + after]
    assert sorted(await stored_ids(db)) == sorted(expected)


async def test_shutdown_during_outage_spools_and_next_start_replays(
    db: Database, tmp_path: Path
) -> None:
    spool_path = tmp_path / "spool.jsonl"
    await take_tables_offline(db)
    first = new_writer(db, spool_path)
    await first.start()
    records = mixed_records(25)
    for record in records:
        first.submit(record)
    await first.aclose()
    assert first.spool_depth == len(records)

    await bring_tables_back(db)
    second = new_writer(db, spool_path)
    await second.start()
    assert second.spool_depth == 0
    await second.aclose()
    assert sorted(await stored_ids(db)) == sorted(record.id for record in records)
    assert not spool_path.exists() or spool_path.stat().st_size == 0


KILLED_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from service.store.db import Database
    from service.store.writer import RecordWriter
    from tests.store.factories import make_check, make_triple

    async def main(url, spool, count):
        writer = RecordWriter(Database(url), Path(spool), batch_size=8, flush_interval_s=0.01,
                              retry_interval_s=60, queue_size=1000, max_hold_s=5,
                              shutdown_timeout_s=5)
        await writer.start()
        for index in range(count):
            record = make_triple(index) if index % 2 else make_check(index)
            writer.submit(record)
            print(record.id, flush=True)
        while writer.spool_depth < count:
            await asyncio.sleep(0.01)
        print("spooled", flush=True)
        await asyncio.sleep(600)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


async def test_killed_writer_loses_nothing(
    db_url: str, empty_db: Database, tmp_path: Path
) -> None:
    # The tables do not exist yet: every batch of the doomed writer goes to the spool.
    spool_path = tmp_path / "spool.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_WRITER, db_url, str(spool_path), "20",
        stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).resolve().parents[2],
    )
    assert process.stdout is not None
    lines = []
    while True:
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().strip()
        assert line, "writer process exited early"
        if line == "spooled":
            break
        lines.append(line)
    process.kill()
    await process.wait()

    await empty_db.create_all()
    successor = new_writer(empty_db, spool_path)
    await successor.start()
    await successor.aclose()
    assert sorted(await stored_ids(empty_db)) == sorted(lines)


async def test_crash_mid_replay_is_replayed_without_duplicates(
    db: Database, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool.jsonl")
    records = mixed_records(30)
    spool.append(records)
    assert spool.claim()
    # The crashed replay got the first half in before dying.
    assert await insert_records(db, records[:15]) == []

    writer = new_writer(db, spool.path)
    await writer.start()
    await writer.aclose()
    assert sorted(await stored_ids(db)) == sorted(record.id for record in records)
    assert not spool.replaying_path.exists()


async def test_full_queue_overflows_to_spool_then_database(db: Database, tmp_path: Path) -> None:
    writer = new_writer(db, tmp_path / "spool.jsonl", queue_size=5)
    await writer.start()
    records = mixed_records(50)
    for record in records:
        writer.submit(record)  # all at once: the queue holds 5, the rest overflow
    assert writer.queue_depth == len(records)
    await wait_until(lambda: writer.spool_depth == 0 and writer.queue_depth == 0)
    await writer.aclose()
    assert sorted(await stored_ids(db)) == sorted(record.id for record in records)


async def test_refused_record_is_kept_aside_and_does_not_block_the_rest(
    db: Database, writer: RecordWriter, tmp_path: Path
) -> None:
    good = mixed_records(10)
    bad = make_check(99, framework=None)  # NOT NULL: refused by both dialects
    for record in [*good[:5], bad, *good[5:]]:
        writer.submit(record)
    await writer.aclose()

    assert sorted(await stored_ids(db)) == sorted(record.id for record in good)
    dead_letter = tmp_path / "spool.jsonl.dead.jsonl"
    rejected = [orjson.loads(line) for line in dead_letter.read_bytes().splitlines()]
    assert [entry["record"]["id"] for entry in rejected] == [bad.id]
    assert writer.spool_depth == 0


async def test_submit_after_close_is_spooled(db: Database, tmp_path: Path) -> None:
    writer = new_writer(db, tmp_path / "spool.jsonl")
    await writer.start()
    await writer.aclose()
    late = make_check(1)
    writer.submit(late)
    assert writer.spool_depth == 1

    successor = new_writer(db, tmp_path / "spool.jsonl")
    await successor.start()
    await successor.aclose()
    assert await stored_ids(db) == [late.id]


async def test_checks_and_triples_land_in_their_own_tables(
    db: Database, writer: RecordWriter
) -> None:
    for record in mixed_records(9):
        writer.submit(record)
    await writer.aclose()
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Check)) == 6
        assert await session.scalar(select(func.count()).select_from(Triple)) == 3


async def test_records_submitted_to_a_writer_never_started_are_kept(
    db: Database, tmp_path: Path
) -> None:
    unstarted = new_writer(db, tmp_path / "spool.jsonl", queue_size=2)
    records = mixed_records(4)  # two queued, two overflowing
    for record in records:
        unstarted.submit(record)
    await unstarted.aclose()
    assert unstarted.spool_depth == len(records)

    successor = new_writer(db, tmp_path / "spool.jsonl")
    await successor.start()
    await successor.aclose()
    assert await has_stored(db, records)
