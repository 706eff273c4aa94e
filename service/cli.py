"""The proxy's own commands: `serve`, `openapi`, `db`, `keys`, `triples`, `models`, `adapters`.

The root `conscience` command that also mounts the offline tools (train, finetune, eval,
calibrate) is `conscience_cli/`: nothing here imports them.

`serve`'s flags are generated from `Settings` (service/commands/flags.py), so every setting is a
flag with the same help text and nothing drifts; a flag left out falls back to
`CONSCIENCE_*`, `.env`, the `--config` file and the default. `serve --help` lists the decisions
an operator makes (`OPERATOR_FLAGS`); the limits and tuning are hidden flags that still work,
and live best in a `--config` file or variables (docs/settings.md lists them all).
Secrets are never flags (`ps` shows a command line to every user): they come from the
environment or from a file (`CONSCIENCE_<NAME>_FILE`).

The core install runs every command's `--help`; what a user must fix (a setting, a missing
extra) is one line and exit 2, never a traceback (`service/commands/errors.py`).
"""

from __future__ import annotations

import logging
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

# The decisions an operator makes: what `serve --help` shows (one screen). Every other setting is
# a limit or a tuning knob: a hidden flag, a variable, a `--config` key.
OPERATOR_FLAGS = (
    "config", "backend", "upstream_url", "model", "judge_model", "judge_style", "mode", "framework",
    "host", "port", "workers", "db_url", "auto_migrate", "log_level",
)

SERVE_EPILOG = (
    "Limits, timeouts and tuning: a --config file (TOML or YAML, a table per group), "
    "CONSCIENCE_<GROUP>__<NAME> variables, or their flags (hidden here); docs/settings.md lists every setting."
)

log = logging.getLogger("conscience.settings")


def serve(**flags: Any) -> None:
    """Run the OpenAI-compatible conscience proxy."""
    settings = settings_or_exit(**flags)
    if settings.serving.backend is BackendKind.LOCAL:
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

    configure_logging(settings.serving.log_level)
    for line in settings.deprecated_names():  # once, at start-up (workers get the new names)
        log.warning(line)
    try:
        settings = resolve_local_model(settings)
        check_served_models(settings)
        check_probe_file(settings)
        check_thresholds_file(settings)
        check_tracing_environment()
        settings = migrate_before_serving(settings)  # once, before any worker starts
    except StartupError as exc:
        fail(str(exc), exc.exit_code)
    app_ = create_app(settings) if settings.serving.workers == 1 else None
    target = settings.upstream.url if settings.serving.backend is BackendKind.UPSTREAM else settings.local.model
    typer.echo(
        f"conscience listening on http://{settings.serving.host}:{settings.serving.port}/v1 "
        f"(backend {settings.serving.backend.value}: {target}; framework {settings.policy.framework}; "
        f"mode {settings.policy.mode.value}; database {shown_url(settings.store.db_url)}; "
        f"{settings.serving.workers} worker{'s' * (settings.serving.workers > 1)})",
        err=True,
    )
    if settings.serving.workers > 1:
        from service.workers import run_workers

        run_workers(settings, uvicorn_config(settings))
        return
    uvicorn.run(app_, **uvicorn_config(settings))


with_parameters(serve, [
    *(settings_parameter(name, brief=True) for name in OPERATOR_FLAGS),
    *(
        settings_parameter(name, hidden=True) for name in Settings.flat_names.values()
        if name not in NOT_SERVE_FLAGS and name not in OPERATOR_FLAGS
    ),
    *secret_refusals(),  # `--admin-key x` is one line saying where the key goes
])
app.command("serve", epilog=SERVE_EPILOG)(serve)


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
