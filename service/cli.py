"""The proxy's own commands: `serve`, `openapi`, `db`, `keys`, `triples`, `models`, `adapters`.

The root `conscience` command that also mounts the offline tools (train, finetune, eval,
calibrate) is `conscience_cli/`: nothing here imports them.

`serve`'s flags are generated from `Settings` (service/commands/flags.py), so every setting is a
flag with the same help text and nothing drifts; a flag left out falls back to
`CONSCIENCE_*`, `.env` and the default.
Secrets are never flags (`ps` shows a command line to every user): they come from the
environment or from a file (`CONSCIENCE_<NAME>_FILE`).

The core install runs every command's `--help`; what a user must fix (a setting, a missing
extra) is one line and exit 2, never a traceback (`service/commands/errors.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from service.commands.errors import fail, require_extra, settings_or_exit
from service.commands.flags import secret_refusals, settings_parameter, with_parameters
from service.settings import SECRET_SETTINGS, BackendKind, Settings

app = typer.Typer(no_args_is_help=True, help="The OpenAI-compatible conscience proxy.")

# Settings that are not serve flags: secrets (environment or file only) and settings of other
# commands.
NOT_SERVE_FLAGS = frozenset({*SECRET_SETTINGS, "model_cache_dir"})


def serve(**flags: Any) -> None:
    """Run the OpenAI-compatible conscience proxy."""
    settings = settings_or_exit(**flags)
    if settings.backend is BackendKind.LOCAL:
        require_extra("local", "conscience serve --backend local")
    import uvicorn

    from service.api.server_limits import uvicorn_config
    from service.app import create_app
    from service.logs import configure_logging
    from service.startup import (
        StartupError,
        check_probe_file,
        check_served_models,
        check_thresholds_file,
        check_tracing_environment,
        migrate_before_serving,
        resolve_local_model,
    )
    from service.store.db import shown_url

    configure_logging(settings.log_level)
    try:
        settings = resolve_local_model(settings)
        check_served_models(settings)
        check_probe_file(settings)
        check_thresholds_file(settings)
        check_tracing_environment()
        settings = migrate_before_serving(settings)  # once, before any worker starts
    except StartupError as exc:
        fail(str(exc), exc.exit_code)
    app_ = create_app(settings) if settings.workers == 1 else None
    target = settings.upstream_url if settings.backend is BackendKind.UPSTREAM else settings.local_model
    typer.echo(
        f"conscience listening on http://{settings.host}:{settings.port}/v1 "
        f"(backend {settings.backend.value}: {target}; framework {settings.framework}; "
        f"mode {settings.mode.value}; database {shown_url(settings.db_url)}; "
        f"{settings.workers} worker{'s' * (settings.workers > 1)})",
        err=True,
    )
    if settings.workers > 1:
        from service.workers import run_workers

        run_workers(settings, uvicorn_config(settings))
        return
    uvicorn.run(app_, **uvicorn_config(settings))


with_parameters(serve, [
    *(settings_parameter(name) for name in Settings.model_fields if name not in NOT_SERVE_FLAGS),
    *secret_refusals(),  # `--admin-key x` is one line saying where the key goes
])
app.command("serve")(serve)


@app.command()
def openapi(output: Path = typer.Option(None, help="Write here instead of stdout.")) -> None:
    """Print the OpenAPI contract of the proxy as YAML (the source of openapi.yaml)."""
    from service.openapi_spec import openapi_yaml

    text = openapi_yaml()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


def mount_subcommands() -> None:
    """The service's command groups (imported late: `--help` of the root stays fast)."""
    from service.commands.adapters import adapters_app
    from service.commands.blocked import blocked_app
    from service.commands.db import db_app, keys_app
    from service.commands.models import models_app
    from service.commands.triples import triples_app

    app.add_typer(db_app, name="db")
    app.add_typer(keys_app, name="keys")
    app.add_typer(triples_app, name="triples")
    app.add_typer(blocked_app, name="blocked")
    app.add_typer(models_app, name="models")
    app.add_typer(adapters_app, name="adapters")
