"""The migrations build exactly the schema the models describe, on both dialects."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from service.store.db import Database
from service.store.migrate import alembic_config, upgrade
from service.store.models import Base


def schema_diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return compare_metadata(context, Base.metadata)


async def test_upgrade_matches_models(db_url: str, empty_db: Database) -> None:
    await asyncio.to_thread(upgrade, db_url)
    async with empty_db.engine.connect() as connection:
        assert await connection.run_sync(schema_diff) == []
        tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert tables == {"alembic_version", *Base.metadata.tables}


async def test_upgrade_twice_is_a_no_op_and_base_removes_everything(
    db_url: str, empty_db: Database
) -> None:
    await asyncio.to_thread(upgrade, db_url)
    await asyncio.to_thread(upgrade, db_url)
    await asyncio.to_thread(command.downgrade, alembic_config(db_url), "base")
    async with empty_db.engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert tables == {"alembic_version"}
