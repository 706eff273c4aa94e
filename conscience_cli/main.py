"""`conscience`: one command line over three packages that never import each other's CLIs.

- service/ (the proxy): serve, openapi, db, keys, triples, models, adapters;
- trainer/ (offline): train, finetune;
- evaluation/ (offline): eval, calibrate.

The offline packages are optional here: an image that ships only service/ (the proxy image)
still has a working `conscience`, whose offline commands say which package they need.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Annotated, Any

import typer

from service.commands.errors import fail

DISTRIBUTION = "emergent-conscience"

app = typer.Typer(no_args_is_help=True, help="An inference-time conscience for LLMs.")


def _version(show: bool) -> None:
    if show:
        typer.echo(f"conscience {metadata.version(DISTRIBUTION)}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """An inference-time conscience for LLMs: an OpenAI-compatible proxy and its DPO trainer."""


def _offline(module: str) -> Any | None:
    """The module, or None when its offline package is not installed here (the proxy image);
    a missing dependency of an installed package (torch, trl, …) is no reason to hide it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module.startswith(exc.name):
            raise
        return None


def _missing(package: str, *commands: str) -> None:
    """Stand-ins for the commands of an offline package this install lacks: one line, exit 2."""
    for name in commands:
        app.command(
            name, help=f"Needs the `{package}` package (not in this install).",
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        )(_stand_in(package, name))


def _stand_in(package: str, name: str) -> Any:
    def absent() -> None:
        fail(f"`conscience {name}` needs the `{package}` package, which this install (the proxy "
             "image) leaves out; run it from a full install: pip install -e '.[train,eval]'")

    return absent


def _mount() -> None:
    from service import cli as service_cli

    service_cli.mount_subcommands()
    app.add_typer(service_cli.app)  # unnamed: its commands and groups merge into the root
    trainer_cli, finetune_cli = _offline("trainer.nightly.cli"), _offline("trainer.finetune.cli")
    if trainer_cli is None or finetune_cli is None:
        _missing("trainer", "train", "finetune")
    else:
        app.command("train")(trainer_cli.train)
        app.command("finetune")(finetune_cli.finetune_command)
    evaluation_cli = _offline("evaluation.cli")
    if evaluation_cli is None:
        _missing("evaluation", "eval", "calibrate")
    else:
        app.add_typer(evaluation_cli.eval_app, name="eval")
        app.command("calibrate")(evaluation_cli.calibrate_command)


def command_tree() -> Any:
    """The whole CLI as one click group: what `main` runs and what tests walk (README and docs/, compose)."""
    if not app.registered_groups:
        _mount()
    return typer.main.get_group(app)


def main() -> None:
    command_tree()()


if __name__ == "__main__":
    main()
