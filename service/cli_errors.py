"""How commands report what the user must fix: one line on stderr and exit 2, no traceback.

- A bad setting (flag, `CONSCIENCE_*` variable, `.env`): one line per setting, naming it and
  what it accepts.
- A missing optional extra: the core install (`pip install -e .`) is the proxy in front of an
  upstream; a command that needs more is refused before it does any work, with the install
  line to run (rather than an import traceback halfway through, or, as `eval judge` once did,
  after scoring every row).
"""

from __future__ import annotations

import importlib.util
from typing import Any, NoReturn

import typer
from pydantic import ValidationError

from service.settings import Settings, load_settings, setting_errors

# The modules each extra of pyproject.toml brings that our code imports.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "local": ("torch", "transformers", "peft", "safetensors", "gguf"),
    "train": ("torch", "transformers", "peft", "trl", "datasets"),
    "eval": ("numpy", "matplotlib"),
}


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings_or_exit(**overrides: Any) -> Settings:
    """Settings from flags, environment and `.env`; a bad value is one line each and exit 2."""
    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        for line in setting_errors(exc):
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
