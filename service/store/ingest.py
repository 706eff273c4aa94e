"""Idempotent bulk inserts of request-path records (the writer's only way into the database).

Records carry their own ids, so inserting "ON CONFLICT (id) DO NOTHING" makes a replayed spool
or a retried batch harmless. Errors split into two kinds: the record's own data is refused
(IntegrityError, DataError — retrying never helps, so those records are returned to the caller)
and everything else, which is treated as an outage and raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError

from service.store.db import Database
from service.store.models import Check, Triple
from service.store.records import CheckRecord, Record, TripleRecord

REFUSED_DATA_ERRORS = (IntegrityError, DataError)


async def insert_records(db: Database, records: Sequence[Record]) -> list[tuple[Record, str]]:
    """Insert every record not already present; return the ones the database refuses, with why.

    Raises on anything that looks like an outage (connection, missing table, lock timeout).
    """
    try:
        await _insert(db, records)
        return []
    except REFUSED_DATA_ERRORS as exc:
        if len(records) == 1:
            return [(records[0], _reason(exc))]
    # One bad record fails its whole batch: find it by inserting the rest one at a time.
    refused: list[tuple[Record, str]] = []
    for record in records:
        try:
            await _insert(db, [record])
        except REFUSED_DATA_ERRORS as exc:
            refused.append((record, _reason(exc)))
    return refused


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
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]
