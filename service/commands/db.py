"""`conscience db …` and `conscience keys …`: schema migrations and client API keys."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from service.commands.errors import fail, settings_or_exit
from service.frameworks import load_frameworks
from service.settings import Mode
from service.store import credentials
from service.store.db import Database, error_reason, shown_url
from service.store.migrate import upgrade
from service.store.models import ApiKey

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(
    help="Client API keys (stored as SHA-256; shown once).", no_args_is_help=True
)

DbUrl = Annotated[
    str | None,
    typer.Option("--db-url", help="SQLAlchemy async URL. Default: CONSCIENCE_STORE__DB_URL / settings."),
]

T = TypeVar("T")


def _url(db_url: str | None) -> str:
    return settings_or_exit(db_url=db_url).store.db_url


def _with_database(db_url: str | None, work: Callable[[Database], Awaitable[T]]) -> T:
    async def run() -> T:
        db = Database(_url(db_url))
        try:
            return await work(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    except (DBAPIError, OSError) as exc:
        typer.secho(
            f"Database error: {str(exc).splitlines()[0]}\n"
            "Is the database reachable, and has 'conscience db upgrade' been run?",
            err=True, fg=typer.colors.RED,
        )
        raise typer.Exit(1) from None


@db_app.command("upgrade")
def upgrade_command(
    db_url: DbUrl = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Create or migrate the schema."""
    url = _url(db_url)
    try:
        upgrade(url, revision)
    except (SQLAlchemyError, OSError) as exc:
        fail(f"database error: {error_reason(exc)}", code=1)
    typer.echo(f"{shown_url(url)} is at revision {revision}.")


@keys_app.command("create")
def create_command(
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
    framework: Annotated[
        str | None, typer.Option(help="Framework this key's requests use by default.")
    ] = None,
    mode: Annotated[
        Mode | None, typer.Option(help="Mode this key's requests use by default.")
    ] = None,
    db_url: DbUrl = None,
) -> None:
    """Create a key and print it: this is the only time it is shown."""
    settings = settings_or_exit(db_url=db_url)
    if framework is not None and framework not in load_frameworks(settings.policy.frameworks_dir):
        fail(f"--framework: unknown framework {framework!r}; available: "
             f"{', '.join(sorted(load_frameworks(settings.policy.frameworks_dir)))}")

    async def create(db: Database) -> tuple[ApiKey, str]:
        async with db.sessions.begin() as session:
            return await credentials.create_api_key(
                session, name, framework=framework, mode=mode.value if mode else None
            )

    key, plaintext = _with_database(db_url, create)
    typer.echo(plaintext)
    typer.secho(
        f"Created key {key.id} ({name}). Store it now: it cannot be shown again.",
        err=True, fg=typer.colors.YELLOW,
    )


@keys_app.command("list")
def list_command(db_url: DbUrl = None) -> None:
    """List keys (prefixes only), newest first."""

    async def load(db: Database) -> list[ApiKey]:
        async with db.sessions() as session:
            return list(await credentials.list_api_keys(session))

    keys = _with_database(db_url, load)
    if not keys:
        typer.echo("No API keys.")
        return
    typer.echo(f"{'ID':32}  {'PREFIX':12}  {'NAME':20}  {'FRAMEWORK':12}  {'MODE':8}  STATE")
    for key in keys:
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        typer.echo(
            f"{key.id:32}  {key.prefix:12}  {key.name[:20]:20}  {key.framework or '-':12}  "
            f"{key.mode or '-':8}  {state}"
        )


@keys_app.command("revoke")
def revoke_command(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id (see 'keys list').")],
    db_url: DbUrl = None,
) -> None:
    """Revoke a key; running servers stop accepting it within api_key_refresh_s."""

    async def revoke(db: Database) -> ApiKey | None:
        async with db.sessions.begin() as session:
            return await credentials.revoke_api_key(session, key_id)

    key = _with_database(db_url, revoke)
    if key is None:
        typer.secho(f"No API key with id {key_id!r}.", err=True, fg=typer.colors.RED)
        raise typer.Exit(1)
    typer.echo(f"Revoked key {key.id} ({key.name}).")
