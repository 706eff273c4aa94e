"""`conscience train` and `conscience adapters list|activate|rollback`.

`train`'s flags are generated from `TrainConfig`'s fields (name, type, default, help), so the
dataclass stays the one place that documents a knob. Exit codes: 0 when a version was
published, when there was nothing to do, or when another run holds the lock (a cron job that
found nothing to do has not failed); 3 when the new version failed the evaluation gate; 1 on
an error (database or vLLM unreachable, unknown version, …), reported without a traceback.

Run it as `conscience train …` or `python -m trainer.cli train …`.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from service.cli_errors import require_extra
from service.store.db import Database
from service.store.models import AdapterVersion
from trainer.config import PublishTarget, TrainConfig
from trainer.publish import Publisher, PublishError, make_publisher
from trainer.registry import RegistryError, get_version, list_versions, rollback_target

EXIT_GATE_FAILED = 3

app = typer.Typer(no_args_is_help=True, help="Nightly DPO training of LoRA adapters.")
adapters_app = typer.Typer(
    no_args_is_help=True, help="List, activate and roll back adapter versions."
)
app.add_typer(adapters_app, name="adapters")

T = TypeVar("T")

_CONFIG_FIELDS = {config_field.name: config_field for config_field in fields(TrainConfig)}
_CONFIG_TYPES = typing.get_type_hints(TrainConfig)


def config_option(name: str) -> Any:
    """A typer option with the help text and environment variable of TrainConfig's field."""
    config_field = _CONFIG_FIELDS[name]
    return typer.Option(
        help=config_field.metadata["help"],
        envvar=config_field.metadata["envvar"],
        show_envvar=config_field.metadata["envvar"] is not None,
    )


def _field_default(name: str) -> Any:
    config_field = _CONFIG_FIELDS[name]
    if config_field.default_factory is not MISSING:
        return config_field.default_factory()
    return ... if config_field.default is MISSING else config_field.default


def _run(action: Callable[[], Awaitable[T]]) -> T:
    """Run an async action; operator-facing failures become one red line and exit 1."""
    try:
        return asyncio.run(action())
    except SQLAlchemyError as exc:
        # The driver's own first line ("no such table: triples"), not the SQL statement.
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        _fail(f"database error: {reason}")
    except (RegistryError, PublishError, ValueError, OSError) as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(1)


def train(**flags: Any) -> None:
    """Train a new adapter version from the logged triples, gate it, and publish it."""
    require_extra("train", "conscience train")
    from trainer.run import Outcome, run_training

    try:
        config = TrainConfig(**flags)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    publisher = _publisher(
        config.vllm_url if config.publish == PublishTarget.VLLM else None,
        config.vllm_api_key,
        config.vllm_adapters_dir,
        config.keep_loaded,
        config.vllm_timeout_s,
    )
    console = Console()
    result = _run(lambda: run_training(config, publisher, console))
    console.print(result.message)
    if result.outcome == Outcome.FAILED_GATE:
        raise typer.Exit(EXIT_GATE_FAILED)


train.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[_CONFIG_TYPES[name], config_option(name)],
            default=_field_default(name),
        )
        for name in _CONFIG_FIELDS
    ]
)
train.__annotations__ = {name: _CONFIG_TYPES[name] for name in _CONFIG_FIELDS}
app.command()(train)


DbUrl = Annotated[str, config_option("db_url")]
VllmUrl = Annotated[
    str | None,
    typer.Option(help="Also load the version into this vLLM server before activating it."),
]
VllmApiKey = Annotated[str | None, config_option("vllm_api_key")]
VllmAdaptersDir = Annotated[Path | None, config_option("vllm_adapters_dir")]
KeepLoaded = Annotated[int, config_option("keep_loaded")]
VllmTimeout = Annotated[float, config_option("vllm_timeout_s")]


@adapters_app.command("list")
def list_command(db_url: DbUrl = _field_default("db_url")) -> None:
    """Every adapter version, newest first."""

    async def fetch() -> list[Any]:
        db = Database(db_url)
        try:
            return await list_versions(db)
        finally:
            await db.dispose()

    versions = _run(fetch)
    names = {version.id: version.name for version in versions}
    table = Table(
        "name", "status", "parent", "triples", "held-out accuracy", "created", "activated"
    )
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
    db_url: DbUrl = _field_default("db_url"),
    vllm_url: VllmUrl = None,
    vllm_api_key: VllmApiKey = None,
    vllm_adapters_dir: VllmAdaptersDir = None,
    keep_loaded: KeepLoaded = _field_default("keep_loaded"),
    vllm_timeout_s: VllmTimeout = _field_default("vllm_timeout_s"),
) -> None:
    """Make a version the active one. Behind vLLM, pass --vllm-url: it is loaded there first."""
    publisher = _publisher(vllm_url, vllm_api_key, vllm_adapters_dir, keep_loaded, vllm_timeout_s)
    active = _activate(db_url, publisher, lambda db: get_version(db, name))
    Console().print(f"{active} is active")


@adapters_app.command("rollback")
def rollback_command(
    db_url: DbUrl = _field_default("db_url"),
    vllm_url: VllmUrl = None,
    vllm_api_key: VllmApiKey = None,
    vllm_adapters_dir: VllmAdaptersDir = None,
    keep_loaded: KeepLoaded = _field_default("keep_loaded"),
    vllm_timeout_s: VllmTimeout = _field_default("vllm_timeout_s"),
) -> None:
    """Re-activate the version the active one was trained from (behind vLLM: --vllm-url)."""
    publisher = _publisher(vllm_url, vllm_api_key, vllm_adapters_dir, keep_loaded, vllm_timeout_s)
    active = _activate(db_url, publisher, rollback_target)
    Console().print(f"rolled back: {active} is active")


def _publisher(
    vllm_url: str | None,
    vllm_api_key: str | None,
    vllm_adapters_dir: Path | None,
    keep_loaded: int,
    vllm_timeout_s: float,
) -> Publisher:
    return make_publisher(
        vllm_url,
        api_key=vllm_api_key,
        adapters_dir_seen_by_vllm=vllm_adapters_dir,
        keep_loaded=keep_loaded,
        timeout_s=vllm_timeout_s,
    )


def _activate(
    db_url: str, publisher: Publisher, choose: Callable[[Database], Awaitable[AdapterVersion]]
) -> str:
    async def activate() -> str:
        db = Database(db_url)
        try:
            return (await publisher.activate(db, await choose(db))).name
        finally:
            await db.dispose()

    return _run(activate)


if __name__ == "__main__":
    app()
