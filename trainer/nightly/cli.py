"""`conscience train`.

`train`'s flags are generated from `TrainConfig`'s fields (name, type, default, help) by the
one flag bridge (service/commands/flags.py), so the dataclass stays the one place that documents a
knob. Exit codes: 0 when a version was published, when there was nothing to do, or when
another run holds the lock (a cron job that found nothing to do has not failed); 3 when the
new version failed the evaluation gate; 1 on an error (database or vLLM unreachable, …),
reported without a traceback. `conscience adapters` lives with the adapter owner
(service/commands/adapters.py).

Run it as `conscience train …` or `python -m trainer.nightly.cli train …`.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console

from service.adapters.publish import VLLM_API_KEY_VARIABLE, PublishError, PublishOptions, make_publisher
from service.adapters.registry import RegistryError
from service.commands.errors import require_extra, run_or_exit
from service.commands.flags import dataclass_parameters, refused_secret_parameter, with_parameters
from trainer.nightly.config import PublishTarget, TrainConfig

EXIT_GATE_FAILED = 3

app = typer.Typer(no_args_is_help=True, help="Nightly DPO training of LoRA adapters.")


@app.callback()
def trainer() -> None:
    """Nightly DPO training of LoRA adapters (`python -m trainer.nightly.cli train …`)."""

def train(vllm_api_key: None = None, **flags: Any) -> None:
    """Train a new adapter version from the logged triples, gate it, and publish it."""
    del vllm_api_key  # a refused flag (its callback exits before this runs): always None
    require_extra("train", "conscience train")
    from trainer.nightly.run import Outcome, run_training

    try:
        config = TrainConfig(**flags)
        options = PublishOptions.for_command(
            config.vllm_url if config.publish == PublishTarget.VLLM else None,
            config.vllm_adapters_dir,
            config.keep_loaded,
            config.vllm_timeout_s,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    publisher = make_publisher(options)
    console = Console()
    result = run_or_exit(
        lambda: run_training(config, publisher, console), (RegistryError, PublishError, ValueError, OSError),
    )
    console.print(result.message)
    if result.outcome == Outcome.FAILED_GATE:
        raise typer.Exit(EXIT_GATE_FAILED)


app.command()(with_parameters(train, [
    *dataclass_parameters(TrainConfig),
    refused_secret_parameter("vllm_api_key", VLLM_API_KEY_VARIABLE),  # from the environment or a file
]))


if __name__ == "__main__":
    app()
