"""A record the database refuses for its data is set aside; it never stops the writer.

Before, PostgreSQL's data errors reached the writer as asyncpg's generic driver error and were
taken for an outage: one bad record sent every later one to the spool, for good.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from service.metrics import Metrics
from service.store.db import Database
from service.store.records import Record
from service.store.spool import Spool
from service.store.writer import RecordWriter
from tests.store.factories import make_check, make_triple
from tests.store.test_writer import mixed_records, new_writer, stored_ids, wait_until

# name: (a record built from an index, the dialects that refuse it)
UNSTORABLE: dict[str, tuple[Callable[[int], Record], set[str]]] = {
    "nul_in_text": (lambda index: make_triple(index, chosen="fixed\x00answer"), {"postgres"}),
    "model_too_long": (lambda index: make_check(index, policy_model="m" * 300), {"postgres"}),
    "lone_surrogate": (  # JSON requests may carry one as an escape
        lambda index: make_triple(index, rejected="bad \ud800 text"), {"sqlite", "postgres"}
    ),
}

pytestmark = pytest.mark.parametrize("unstorable", list(UNSTORABLE))


def _refused_by(db: Database, unstorable: str) -> bool:
    return ("sqlite" if db.is_sqlite else "postgres") in UNSTORABLE[unstorable][1]


def _dead_letter_ids(spool_path: Path) -> list[str]:
    dead_letter = Spool(spool_path).dead_letter_path
    if not dead_letter.exists():
        return []
    # The standard library: a dead letter may hold lone surrogates as escapes.
    return [json.loads(line)["record"]["id"] for line in dead_letter.read_bytes().splitlines()]


def _dead_lettered_metric(writer: RecordWriter) -> float:
    metrics = Metrics()
    metrics.track_writer(writer)
    for line in metrics.render().decode().splitlines():
        if line.startswith("conscience_records_dead_lettered_total "):
            return float(line.split()[1])
    raise KeyError("conscience_records_dead_lettered_total")


async def test_refused_record_is_dead_lettered_and_later_records_still_flow(
    db: Database, tmp_path: Path, unstorable: str
) -> None:
    spool_path = tmp_path / "spool.jsonl"
    writer = new_writer(db, spool_path)
    await writer.start()
    try:
        before = mixed_records(6)
        bad = UNSTORABLE[unstorable][0](99)
        for record in [*before[:3], bad, *before[3:]]:
            writer.submit(record)
        after = mixed_records(6, start=10)
        for record in after:
            writer.submit(record)
        good = [record.id for record in before + after]
        # Still running: the records after the bad one reach the database, not the spool.
        await wait_until(lambda: _stored_include(db, good))
        assert writer.spool_depth == 0
    finally:
        await writer.aclose()

    refused = _refused_by(db, unstorable)
    assert sorted(await stored_ids(db)) == sorted(good + ([] if refused else [bad.id]))
    assert _dead_letter_ids(spool_path) == ([bad.id] if refused else [])
    assert _dead_lettered_metric(writer) == (1 if refused else 0)


async def test_refused_spool_line_is_dead_lettered_and_does_not_block_the_replay(
    db: Database, tmp_path: Path, unstorable: str
) -> None:
    # An earlier run spooled the bad record among good ones (an outage), then stopped.
    spool_path = tmp_path / "spool.jsonl"
    good = mixed_records(20)
    bad = UNSTORABLE[unstorable][0](99)
    Spool(spool_path).append([*good[:10], bad, *good[10:]])

    writer = new_writer(db, spool_path)
    await writer.start()
    await writer.aclose()

    refused = _refused_by(db, unstorable)
    assert writer.spool_depth == 0
    expected = [record.id for record in good] + ([] if refused else [bad.id])
    assert sorted(await stored_ids(db)) == sorted(expected)
    assert _dead_letter_ids(spool_path) == ([bad.id] if refused else [])


async def _stored_include(db: Database, ids: list[str]) -> bool:
    return set(ids) <= set(await stored_ids(db))
