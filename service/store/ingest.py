"""Idempotent bulk inserts of request-path records (the writer's only way into the database).

Records carry their own ids, so inserting "ON CONFLICT (id) DO NOTHING" makes a replayed spool
or a retried batch harmless. A record whose data the database refuses (see `faults`) is
returned to the caller with the reason, and the rest of its batch is still inserted; any other
failure is the database's and is raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

from service.store.db import Database
from service.store.faults import is_refusal
from service.store.models import Check, Triple
from service.store.records import CheckRecord, Record, TripleRecord


async def insert_records(db: Database, records: Sequence[Record]) -> list[tuple[Record, str]]:
    """Insert every record not already present; return the ones the database refuses, with why.

    One refused record fails its whole batch, so a refused batch is split in halves until each
    refused record stands alone: k bad records among n cost O(k log n) inserts, and the good
    ones all go in.
    """
    try:
        await _insert(db, records)
        return []
    except Exception as exc:
        if not is_refusal(exc):
            raise
        if len(records) == 1:
            return [(records[0], _reason(exc))]
    middle = len(records) // 2
    return [
        *await insert_records(db, records[:middle]),
        *await insert_records(db, records[middle:]),
    ]


async def _insert(db: Database, records: Sequence[Record]) -> None:
    checks = [_row(record) for record in records if isinstance(record, CheckRecord)]
    triples = [_row(record) for record in records if isinstance(record, TripleRecord)]
    async with db.engine.begin() as connection:
        for table, rows in ((Check.__table__, checks), (Triple.__table__, triples)):
            if rows:
                await connection.execute(_insert_ignoring_duplicates(db, table), rows)


def _insert_ignoring_duplicates(db: Database, table: Table) -> Any:
    dialect_insert = sqlite.insert if db.is_sqlite else postgresql.insert
    return dialect_insert(table).on_conflict_do_nothing(index_elements=["id"])


def _row(record: Record) -> dict[str, Any]:
    row = asdict(record)
    del row["kind"]
    return row


def _reason(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__
