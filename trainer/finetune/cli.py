"""`conscience finetune`: flags generated from FinetuneConfig (service/commands/flags.py), so the
dataclass stays the one place that documents a knob. Exit 0 with the registered version's name; 1 on an error an
operator can fix (data, database, model), reported as one line without a traceback.
"""

from __future__ import annotations

import asyncio
from typing import Any

import typer
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from service.commands.errors import require_extra
from service.commands.flags import dataclass_parameters, with_parameters
from trainer.finetune.config import FinetuneConfig

console = Console()

def finetune_command(**flags: Any) -> None:
    """Fine-tune a LoRA adapter on a chat dataset, with the conscience term weighted by
    --alignment-weight, and register it as a new adapter version (not activated)."""
    require_extra("train", "conscience finetune")
    from trainer.finetune.data import FinetuneDataError
    from trainer.finetune.run import run_finetune

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


finetune_app = typer.Typer(help="Supervised LoRA fine-tuning with the conscience term.")
finetune_app.command("finetune")(with_parameters(finetune_command, dataclass_parameters(FinetuneConfig)))

if __name__ == "__main__":
    finetune_app()
