"""Alembic environment: async engines for both dialects, the URL from the caller or the settings.

The engine comes from `service.store.db.Database`, so migrations see the same connection
settings as the service (SQLite pragmas, `?search_path=` on PostgreSQL).
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from service.settings import Settings
from service.store.db import Database
from service.store.models import Base

# A fixed key of its own (not the trainer's): the migration lock of this database.
MIGRATION_LOCK_KEY = 0x636F6E736D6967  # "consmig"

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    # An explicit URL (migrate.upgrade, `alembic -x`) wins; else CONSCIENCE_STORE__DB_URL via Settings.
    return config.get_main_option("sqlalchemy.url") or Settings().store.db_url


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Replicas started together with --auto-migrate: one migrates, the others wait
            # here (the lock ends with the transaction) and then find the schema at head.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def run_online() -> None:
    db = Database(database_url())
    try:
        async with db.engine.connect() as connection:
            await connection.run_sync(run_on)
    finally:
        await db.dispose()


if context.is_offline_mode():
    context.configure(url=database_url(), target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(run_online())
