"""`conscience adapters list|activate|rollback`: the CLI door of `AdapterVersions`.

Part of the core install (the proxy image can activate a version without the trainer). Exit 1
on an error an operator can fix (database or vLLM unreachable, unknown version, …), reported
as one line without a traceback.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from service.adapters.publish import VLLM_API_KEY_VARIABLE, PublishError, PublishOptions
from service.adapters.registry import RegistryError
from service.adapters.versions import AdapterVersions
from service.commands.errors import run_or_exit
from service.commands.flags import refused_secret
from service.store.db import Database
from service.store.models import AdapterVersion

adapters_app = typer.Typer(no_args_is_help=True, help="List, activate and roll back adapter versions.")

T = TypeVar("T")
DEFAULT_DB_URL = "sqlite+aiosqlite:///./conscience.db"
DEFAULTS = PublishOptions()

DbUrl = Annotated[str, typer.Option(
    help="SQLAlchemy async URL of the proxy's database (postgresql+asyncpg://… in production).",
    envvar=["CONSCIENCE_STORE__DB_URL", "CONSCIENCE_DB_URL"], show_envvar=True,  # the proxy's; the old name
)]
VllmUrl = Annotated[
    str | None, typer.Option(help="Also load the version into this vLLM server before activating it.")
]
VllmAdaptersDir = Annotated[Path | None, typer.Option(
    help="The adapters directory as vLLM sees it when it mounts the volume elsewhere (default: the same path).",
)]
KeepLoaded = Annotated[int, typer.Option(
    min=1, help="Adapter versions kept loaded in vLLM (newest first); older ones are unloaded.",
)]
VllmTimeout = Annotated[float, typer.Option(help="Timeout of one vLLM admin call (loading an adapter takes a while).")]
# vLLM's key comes from the environment or a file (PublishOptions.for_command); the flag is refused.
VllmApiKeyRefused = Annotated[str | None, refused_secret("--vllm-api-key", VLLM_API_KEY_VARIABLE)]


def _publish_options(
    vllm_url: str | None, adapters_dir: Path | None, keep_loaded: int, timeout_s: float
) -> PublishOptions:
    try:
        return PublishOptions.for_command(vllm_url, adapters_dir, keep_loaded, timeout_s)
    except ValueError as exc:  # vLLM's key file cannot be read
        raise typer.BadParameter(str(exc)) from None


def _with_versions(db_url: str, options: PublishOptions, use: Callable[[AdapterVersions], Awaitable[T]]) -> T:
    async def run() -> T:
        db = Database(db_url)
        try:
            return await use(AdapterVersions(db, options))
        finally:
            await db.dispose()

    return run_or_exit(run, (RegistryError, PublishError, ValueError, OSError))


@adapters_app.command("list")
def list_command(db_url: DbUrl = DEFAULT_DB_URL) -> None:
    """Every adapter version, newest first."""
    versions: list[AdapterVersion] = _with_versions(db_url, DEFAULTS, AdapterVersions.list)
    names = {version.id: version.name for version in versions}
    table = Table("name", "status", "parent", "triples", "held-out accuracy", "created", "activated")
    for version in versions:
        candidate = (version.metrics.get("gate") or {}).get("held_out", {}).get("candidate")
        table.add_row(
            version.name,
            version.status,
            names.get(version.parent_id, "-") if version.parent_id else "base",
            str(version.triple_count),
            f"{candidate['accuracy']:.3f}" if candidate else "-",
            f"{version.created_at:%Y-%m-%d %H:%M}",
            f"{version.activated_at:%Y-%m-%d %H:%M}" if version.activated_at else "-",
        )
    Console().print(table)


@adapters_app.command("activate")
def activate_command(
    name: Annotated[str, typer.Argument(help="Version to activate, e.g. conscience-v7.")],
    db_url: DbUrl = DEFAULT_DB_URL,
    vllm_url: VllmUrl = None,
    vllm_adapters_dir: VllmAdaptersDir = None,
    keep_loaded: KeepLoaded = DEFAULTS.keep_loaded,
    vllm_timeout_s: VllmTimeout = DEFAULTS.timeout_s,
    vllm_api_key: VllmApiKeyRefused = None,
) -> None:
    """Make a version the active one. Behind vLLM, pass --vllm-url: it is loaded there first
    (its key, if it has one, from CONSCIENCE_VLLM_API_KEY or CONSCIENCE_VLLM_API_KEY_FILE)."""
    options = _publish_options(vllm_url, vllm_adapters_dir, keep_loaded, vllm_timeout_s)
    active = _with_versions(db_url, options, lambda versions: versions.activate(name))
    Console().print(f"{active.name} is active")


@adapters_app.command("rollback")
def rollback_command(
    db_url: DbUrl = DEFAULT_DB_URL,
    vllm_url: VllmUrl = None,
    vllm_adapters_dir: VllmAdaptersDir = None,
    keep_loaded: KeepLoaded = DEFAULTS.keep_loaded,
    vllm_timeout_s: VllmTimeout = DEFAULTS.timeout_s,
    vllm_api_key: VllmApiKeyRefused = None,
) -> None:
    """Re-activate the version the active one was trained from (behind vLLM: --vllm-url)."""
    options = _publish_options(vllm_url, vllm_adapters_dir, keep_loaded, vllm_timeout_s)
    active = _with_versions(db_url, options, AdapterVersions.rollback)
    Console().print(f"rolled back: {active.name} is active")
