"""Checks `conscience serve` runs before it listens, so that a wrong model name is one clear
line at start-up rather than a 404 on every request.

- `--backend local` loads the model the user names (`--model`, as `vllm serve MODEL`); without
  one, the offline demo model, assembled on first use.
- `--auto-migrate`: the schema is migrated once, here, before the proxy listens (also when it
  starts workers); a database that cannot be reached is one line, not Alembic's traceback.
- `--backend upstream` with `--model` / `--judge-model`: each must be among the upstream's
  `/v1/models`. An upstream that cannot be reached is not an error here (vLLM may still be
  loading its weights); it is logged and `/readyz` reports it.
"""

from __future__ import annotations

import asyncio
import logging

from service.core.backend import BackendError
from service.settings import BackendKind, Settings

log = logging.getLogger("conscience.startup")


class StartupError(Exception):
    """A start-up problem the operator must fix; `exit_code` 2 for a setting, 1 otherwise."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def resolve_local_model(settings: Settings) -> Settings:
    """Settings whose `local_model` names what will be loaded (the demo model by default)."""
    if settings.serving.backend is not BackendKind.LOCAL or settings.local.model is not None:
        return settings
    from service.backends.local.demo import DemoModelError, ensure_demo_model

    try:
        directory = ensure_demo_model(settings)
    except DemoModelError as exc:
        raise StartupError(f"the demo model could not be prepared: {exc}", exit_code=1) from None
    return settings.updated({"local.model": str(directory)})


def migrate_before_serving(settings: Settings) -> Settings:
    """With `--auto-migrate`, the schema brought to head before the proxy listens; the settings
    returned have `auto_migrate` off, so neither the app nor a worker migrates again."""
    if not settings.store.auto_migrate:
        return settings
    migrate(settings.store.db_url)
    return settings.updated({"store.auto_migrate": False})


def migrate(db_url: str) -> None:
    """Alembic's upgrade to head. A database that cannot be reached or migrated is a
    StartupError (exit 1) naming the database (password hidden) and the driver's reason."""
    from sqlalchemy.exc import SQLAlchemyError

    from service.store.db import error_reason, shown_url
    from service.store.migrate import upgrade

    try:
        upgrade(db_url)
    except (SQLAlchemyError, OSError) as exc:  # asyncpg's refused connection is a bare OSError
        raise StartupError(
            f"--auto-migrate: cannot migrate the database {shown_url(db_url)}: {error_reason(exc)}",
            exit_code=1,
        ) from None


def check_served_models(settings: Settings) -> None:
    """Refuse model names the upstream does not serve (see the module docstring)."""
    wanted = {
        flag: name
        for flag, name in (("--model", settings.serving.model), ("--judge-model", settings.judge.model))
        if name is not None
    }
    if settings.serving.backend is not BackendKind.UPSTREAM or not wanted:
        return
    served = asyncio.run(_upstream_model_ids(settings))
    if served is None:
        return
    for flag, name in wanted.items():
        if name not in served:
            raise StartupError(
                f"{flag} {name!r} is not served by the upstream; it serves: "
                f"{', '.join(sorted(served)) or 'no models'}"
            )


async def _upstream_model_ids(settings: Settings) -> set[str] | None:
    from service.backends.upstream import UpstreamBackend

    backend = UpstreamBackend.from_settings(settings)
    try:
        return {str(model.get("id")) for model in await backend.models()}
    except BackendError as exc:
        log.warning("model names not checked: the upstream's model list is unavailable (%s)", exc.message)
        return None
    finally:
        await backend.aclose()


def check_thresholds_file(settings: Settings) -> None:
    """The calibrated thresholds file must be readable and well-formed before the model loads."""
    from service.conscience.thresholds import SHIPPED_PATH, ThresholdsError, load_thresholds

    try:
        load_thresholds(settings.judge.thresholds_path or SHIPPED_PATH)
    except ThresholdsError as exc:
        raise StartupError(f"--thresholds-path: {exc}") from None


class StartupFailureLine(logging.Filter):
    """Uvicorn logs the traceback of a failed application start-up (Starlette hands it over as
    text); a StartupError — the operator's to fix, raised once the model has loaded (a probe
    fitted for another model) — is one line instead, as the checks before start-up print it."""

    MARKER = f"{__name__}.StartupError: "

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.MARKER in message:
            record.msg, record.args = "error: " + message.rsplit(self.MARKER, 1)[1].strip(), None
            record.exc_info = record.exc_text = None
        return True


def install_startup_failure_line() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, StartupFailureLine) for existing in logger.filters):
        logger.addFilter(StartupFailureLine())


def check_probe_file(settings: Settings) -> None:
    """A named probe file must be readable before the model loads (its fingerprint is checked
    against the model once it has)."""
    if settings.judge.probe_path is None:
        return
    from service.conscience.probe import ProbeError, load_probe

    try:
        load_probe(settings.judge.probe_path)
    except ProbeError as exc:
        raise StartupError(f"--probe-path: {exc}") from None


# OTEL_TRACES_EXPORTER value -> the module it needs (service/tracing.py imports them).
_EXPORTER_MODULES = {
    "console": "opentelemetry.sdk",
    "otlp": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
}


def check_tracing_environment() -> None:
    """An exporter named in OTEL_TRACES_EXPORTER must exist and be installed (the [tracing]
    extra), so that a typo or a core-only install is one line, not a traceback at start-up."""
    import importlib.util
    import os

    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    for name in (n for n in names if n not in ("", "none")):
        if name not in _EXPORTER_MODULES:
            raise StartupError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r}; use none, console or otlp")
        try:
            found = importlib.util.find_spec(_EXPORTER_MODULES[name]) is not None
        except ModuleNotFoundError:  # a missing parent package
            found = False
        if not found:
            raise StartupError(
                f"OTEL_TRACES_EXPORTER={name} needs the [tracing] extra; install it with: "
                "pip install -e '.[tracing]'"
            )
