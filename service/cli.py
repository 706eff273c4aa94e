"""The `conscience` command line.

`serve`'s flags are generated from `Settings`, so every setting is a flag with the same help
text and nothing drifts; a flag left out falls back to `CONSCIENCE_*` and then the default.
"""

from __future__ import annotations

import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import click
import typer
from pydantic import SecretStr

from service.settings import BackendKind, Settings, load_settings

app = typer.Typer(no_args_is_help=True, help="An inference-time conscience for LLMs.")

# Settings that are not serve flags: they belong to other commands or only to the environment.
_NOT_FLAGS = {"model_cache_dir"}


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """(click type, is_flag) for a settings annotation; optionals unwrap to their inner type."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = inner[0]
    if annotation is bool:
        return bool, True
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return click.Choice([member.value for member in annotation]), False
    if annotation is SecretStr:
        return str, False
    if annotation is Path:
        return click.Path(path_type=Path), False
    return annotation, False


def _serve_options() -> list[click.Option]:
    options = []
    for name, field in Settings.model_fields.items():
        if name in _NOT_FLAGS:
            continue
        click_type, is_flag = _click_type(field.annotation)
        flag = "--" + name.replace("_", "-")
        env = f"CONSCIENCE_{name.upper()}"
        help_text = f"{field.description} [env {env}; default: {field.default!s}]"
        if is_flag:
            no_flag = "--no-" + name.replace("_", "-")
            options.append(click.Option([f"{flag}/{no_flag}", name], default=None, help=help_text))
        else:
            options.append(click.Option([flag, name], type=click_type, default=None, help=help_text))
    return options


def _serve(**flags: Any) -> None:
    import uvicorn

    from service.app import create_app
    from service.logs import configure_logging

    settings = load_settings(**flags)
    configure_logging(settings.log_level)
    if settings.backend is BackendKind.LOCAL and settings.local_model is None:
        from service.backends.local.demo import ensure_demo_model

        settings = settings.model_copy(update={"local_model": str(ensure_demo_model(settings))})
    app_ = create_app(settings)
    target = settings.upstream_url if settings.backend is BackendKind.UPSTREAM else settings.local_model
    typer.echo(
        f"conscience listening on http://{settings.host}:{settings.port}/v1 "
        f"(backend {settings.backend.value}: {target}; framework {settings.framework}; "
        f"mode {settings.mode.value}; database {_redacted(settings.db_url)})",
        err=True,
    )
    uvicorn.run(app_, host=settings.host, port=settings.port, log_config=None, access_log=False)


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


serve_command = click.Command(
    "serve",
    callback=_serve,
    params=_serve_options(),
    help="Run the OpenAI-compatible conscience proxy.",
)


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
    from trainer.cli import app as trainer_app
    from trainer.finetune_cli import finetune_app

    app.add_typer(db_app, name="db")
    app.add_typer(keys_app, name="keys")
    app.add_typer(models_app, name="models")
    app.add_typer(trainer_app)  # unnamed: merges `train` and `adapters` into the root
    app.add_typer(finetune_app)  # likewise `finetune`
    app.add_typer(eval_app, name="eval")
    app.command("calibrate")(calibrate_command)


def main() -> None:
    _mount_subcommands()
    group = typer.main.get_group(app)
    group.add_command(serve_command)
    group()


if __name__ == "__main__":
    main()
