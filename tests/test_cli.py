"""The `conscience` command line: every command is mounted, and none drags torch into the core."""

from __future__ import annotations

import subprocess
import sys

COMMANDS = ["serve", "openapi", "db", "keys", "models", "train", "adapters", "finetune", "eval", "calibrate"]


def test_every_command_is_mounted_without_importing_torch() -> None:
    probe = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "import typer\n"
        "from service import cli\n"
        "cli._mount_subcommands()\n"
        "group = typer.main.get_group(cli.app)\n"
        "group.add_command(cli.serve_command)\n"
        "print(sorted(group.commands))\n"
        "print([m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    mounted, heavy = done.stdout.strip().splitlines()
    assert sorted(COMMANDS) == eval(mounted)
    assert heavy == "[]"
