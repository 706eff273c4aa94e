"""`conscience finetune`: flags generated from FinetuneConfig, so the dataclass stays the one
place that documents a knob. Exit 0 with the registered version's name; 1 on an error an
operator can fix (data, database, model), reported as one line without a traceback.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from dataclasses import MISSING, fields
from typing import Annotated, Any

import typer
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from service.cli_errors import require_extra
from trainer.finetune_config import FinetuneConfig

console = Console()

_FIELDS = {config_field.name: config_field for config_field in fields(FinetuneConfig)}
_TYPES = typing.get_type_hints(FinetuneConfig)


def _option(name: str) -> Any:
    metadata = _FIELDS[name].metadata
    return typer.Option(
        help=metadata["help"], envvar=metadata["envvar"], show_envvar=metadata["envvar"] is not None
    )


def _default(name: str) -> Any:
    config_field = _FIELDS[name]
    if config_field.default_factory is not MISSING:
        return config_field.default_factory()
    return ... if config_field.default is MISSING else config_field.default


def finetune_command(**flags: Any) -> None:
    """Fine-tune a LoRA adapter on a chat dataset, with the conscience term weighted by
    --alignment-weight, and register it as a new adapter version (not activated)."""
    require_extra("train", "conscience finetune")
    from trainer.finetune import run_finetune
    from trainer.finetune_data import FinetuneDataError

    try:
        config = FinetuneConfig(**flags)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        result = asyncio.run(run_finetune(config, console))
    except (FinetuneDataError, ValueError, OSError, SQLAlchemyError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    pairs = sum(result.metrics.pairs_per_step.values())
    console.print(
        f"{result.version_name} registered at {result.path} ({result.metrics.steps} steps, "
        f"{pairs} conscience pair(s)); activate it with `conscience adapters activate "
        f"{result.version_name}`"
    )


finetune_command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[_TYPES[name], _option(name)],
            default=_default(name),
        )
        for name in _FIELDS
    ]
)
finetune_command.__annotations__ = {name: _TYPES[name] for name in _FIELDS}

finetune_app = typer.Typer(help="Supervised LoRA fine-tuning with the conscience term.")
finetune_app.command("finetune")(finetune_command)

if __name__ == "__main__":
    finetune_app()
