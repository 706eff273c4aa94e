"""Run the Alembic migrations from code (`conscience db upgrade`, tests, start-up checks)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # The ini syntax treats % as interpolation; URLs may hold %-escaped passwords.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` to `revision`.

    Synchronous and runs its own event loop: from async code call it in a worker thread
    (`await asyncio.to_thread(upgrade, url)`).
    """
    command.upgrade(alembic_config(url), revision)
