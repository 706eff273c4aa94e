"""The `conscience` command line.

`serve`'s flags are generated from `Settings`, so every setting is a flag with the same help
text and nothing drifts; a flag left out falls back to `CONSCIENCE_*`, `.env` and the default.
Secrets are never flags (`ps` shows a command line to every user): they come from the
environment or from a file (`CONSCIENCE_<NAME>_FILE`).

The core install runs every command's `--help`; what a user must fix (a setting, a missing
extra) is one line and exit 2, never a traceback (`service/cli_errors.py`).
"""

from __future__ import annotations

import inspect
import types
import typing
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import SecretStr

from service.cli_errors import fail, require_extra, settings_or_exit
from service.settings import SECRET_SETTINGS, BackendKind, Settings

DISTRIBUTION = "emergent-conscience"

app = typer.Typer(no_args_is_help=True, help="An inference-time conscience for LLMs.")

# Settings that are not serve flags: secrets (environment or file only) and settings of other
# commands.
_NOT_FLAGS = {*SECRET_SETTINGS, "model_cache_dir"}


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


def _flag_annotation(name: str) -> Any:
    """`Annotated[Optional[T], typer.Option(...)]` for one setting; None means "not given"."""
    field = Settings.model_fields[name]
    annotation = field.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    assert annotation is not SecretStr, f"{name} is a secret: not a flag"
    flag = "--" + name.replace("_", "-")
    declarations = [f"{flag}/--no-{name.replace('_', '-')}"] if annotation is bool else [flag]
    env = f"CONSCIENCE_{name.upper()}"
    help_text = f"{field.description} [env {env}; default: {field.default!s}]"
    return Annotated[typing.Optional[annotation], typer.Option(*declarations, help=help_text)]  # noqa: UP045


def serve(**flags: Any) -> None:
    """Run the OpenAI-compatible conscience proxy."""
    settings = settings_or_exit(**flags)
    if settings.backend is BackendKind.LOCAL:
        require_extra("local", "conscience serve --backend local")
    import uvicorn

    from service.api.server_limits import uvicorn_config
    from service.app import create_app
    from service.logs import configure_logging
    from service.startup import StartupError, check_served_models, resolve_local_model

    configure_logging(settings.log_level)
    try:
        settings = resolve_local_model(settings)
        check_served_models(settings)
    except StartupError as exc:
        fail(str(exc), exc.exit_code)
    app_ = create_app(settings)
    target = settings.upstream_url if settings.backend is BackendKind.UPSTREAM else settings.local_model
    typer.echo(
        f"conscience listening on http://{settings.host}:{settings.port}/v1 "
        f"(backend {settings.backend.value}: {target}; framework {settings.framework}; "
        f"mode {settings.mode.value}; database {_redacted(settings.db_url)})",
        err=True,
    )
    uvicorn.run(app_, **uvicorn_config(settings))


serve.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=_flag_annotation(name), default=None)
        for name in Settings.model_fields
        if name not in _NOT_FLAGS
    ]
)
app.command("serve")(serve)


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command()
def openapi(output: Path = typer.Option(None, help="Write here instead of stdout.")) -> None:
    """Print the OpenAPI contract of the proxy as YAML (the source of openapi.yaml)."""
    from service.openapi_spec import openapi_yaml

    text = openapi_yaml()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


def _mount_subcommands() -> None:
    from service.backends.local.commands import models_app
    from service.evaluation.cli import calibrate_command, eval_app
    from service.store.cli import db_app, keys_app
    from service.store.triples_cli import triples_app
    from trainer.cli import app as trainer_app
    from trainer.finetune_cli import finetune_app

    app.add_typer(db_app, name="db")
    app.add_typer(keys_app, name="keys")
    app.add_typer(triples_app, name="triples")
    app.add_typer(models_app, name="models")
    app.add_typer(trainer_app)  # unnamed: merges `train` and `adapters` into the root
    app.add_typer(finetune_app)  # likewise `finetune`
    app.add_typer(eval_app, name="eval")
    app.command("calibrate")(calibrate_command)


def command_tree() -> Any:
    """The whole CLI as one click group: what `main` runs and what tests walk (README, compose)."""
    if not app.registered_groups:
        _mount_subcommands()
    return typer.main.get_group(app)


def main() -> None:
    command_tree()()


if __name__ == "__main__":
    main()
