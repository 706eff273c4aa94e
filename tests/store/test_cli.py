"""`conscience db upgrade` and `conscience keys create|list|revoke` against real databases."""

from __future__ import annotations

import asyncio
import hashlib

import typer
from typer.testing import CliRunner, Result

from service.commands.db import db_app, keys_app
from service.store import credentials
from service.store.db import Database

cli = typer.Typer()
cli.add_typer(db_app, name="db")
cli.add_typer(keys_app, name="keys")


async def invoke(*args: str) -> Result:
    # The commands run their own event loop, so they need a thread without one.
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args))


async def test_key_lifecycle(db_url: str, empty_db: Database) -> None:
    upgraded = await invoke("db", "upgrade", "--db-url", db_url)
    assert upgraded.exit_code == 0, upgraded.output
    assert (await invoke("keys", "list", "--db-url", db_url)).stdout.strip() == "No API keys."

    created = await invoke(
        "keys", "create", "--name", "team-a", "--framework", "wwjd", "--mode", "monitor",
        "--db-url", db_url,
    )
    assert created.exit_code == 0, created.output
    plaintext = created.stdout.strip()
    assert plaintext.startswith("sk-cons-")
    async with empty_db.sessions() as session:
        (stored,) = await credentials.list_api_keys(session)
    assert stored.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert (stored.name, stored.framework, stored.mode) == ("team-a", "wwjd", "monitor")
    assert stored.prefix == plaintext[:12]

    listed = (await invoke("keys", "list", "--db-url", db_url)).stdout
    assert stored.id in listed and stored.prefix in listed and "active" in listed
    assert plaintext not in listed

    revoked = await invoke("keys", "revoke", stored.id, "--db-url", db_url)
    assert revoked.exit_code == 0, revoked.output
    assert "revoked" in (await invoke("keys", "list", "--db-url", db_url)).stdout
    async with empty_db.sessions() as session:
        assert await credentials.active_api_keys(session) == []


async def test_errors_are_explained(db_url: str) -> None:
    not_migrated = await invoke("keys", "list", "--db-url", db_url)
    assert not_migrated.exit_code == 1
    assert "conscience db upgrade" in not_migrated.stderr

    await invoke("db", "upgrade", "--db-url", db_url)
    unknown = await invoke("keys", "revoke", "no-such-id", "--db-url", db_url)
    assert unknown.exit_code == 1
    assert "No API key with id 'no-such-id'" in unknown.stderr

    bad_mode = await invoke("keys", "create", "--name", "x", "--mode", "loud", "--db-url", db_url)
    assert bad_mode.exit_code == 2
