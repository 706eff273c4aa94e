"""How commands report what the user must fix: one line on stderr and exit 2, no traceback.

- A bad setting (flag, `CONSCIENCE_*` variable, `.env`): one line per setting, naming it and
  what it accepts.
- An operation that fails for a reason the operator can fix (database unreachable, unknown
  version, vLLM refused): one red line and exit 1 (`run_or_exit`).
- A missing optional extra: the core install (`pip install -e .`) is the proxy in front of an
  upstream; a command that needs more is refused before it does any work, with the install
  line to run (rather than an import traceback halfway through, or, as `eval judge` once did,
  after scoring every row).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from service.settings import S, Settings, SettingsSourceError, load_settings, setting_errors

# The modules each extra of pyproject.toml brings that our code imports.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "local": ("torch", "transformers", "peft", "safetensors", "gguf"),
    "train": ("torch", "transformers", "peft", "trl", "datasets"),
    "eval": ("numpy", "matplotlib"),
}


T = TypeVar("T")


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings_or_exit(settings_class: type[S] = Settings, **overrides: Any) -> S:  # type: ignore[assignment]
    """Settings from flags, environment, `.env` and the `--config` file; a bad value is one
    line each and exit 2."""
    try:
        return load_settings(settings_class, **overrides)
    except SettingsSourceError as exc:
        fail(str(exc))
    except ValidationError as exc:
        for line in setting_errors(exc, settings_class):
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(2) from None


def missing_modules(extra: str) -> list[str]:
    return [module for module in EXTRA_MODULES[extra] if importlib.util.find_spec(module) is None]


def require_extra(extra: str, command: str) -> None:
    """Exit 2 with the install line when `extra` is not installed."""
    missing = missing_modules(extra)
    if missing:
        fail(
            f"`{command}` needs the [{extra}] extra (missing: {', '.join(missing)}); "
            f"install it with: pip install -e '.[{extra}]'"
        )


def run_or_exit(
    action: Callable[[], Awaitable[T]], errors: tuple[type[BaseException], ...] = (ValueError, OSError)
) -> T:
    """Run an async action; a database error or one of `errors` becomes one red line and exit 1."""
    try:
        return asyncio.run(action())
    except SQLAlchemyError as exc:
        from service.store.db import error_reason  # late: the root command's --help stays light

        _fail_operation(f"database error: {error_reason(exc)}")
    except errors as exc:
        _fail_operation(str(exc))


def _fail_operation(message: str) -> NoReturn:
    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(1)
