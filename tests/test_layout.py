"""The layering of docs/architecture.md: the server never imports the offline tools, and the
root command works without them (the proxy image ships service/ and conscience_cli/ only)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OFFLINE = ("trainer", "evaluation", "conscience_cli")


def test_nothing_under_service_imports_the_offline_packages() -> None:
    offenders = []
    for path in sorted((ROOT / "service").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            )
            offenders += [f"{path.relative_to(ROOT)}: {name}" for name in names if name.split(".")[0] in OFFLINE]
    assert offenders == []


# Hides the offline packages the way an image without them would.
WITHOUT_OFFLINE = """
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("trainer", "evaluation"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name.split(".")[0])
sys.meta_path.insert(0, Hide())
sys.argv = ["conscience", *sys.argv[1:]]
from conscience_cli.main import main
main()
"""


def _without_offline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_OFFLINE, *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_without_the_offline_packages_the_proxy_commands_still_work() -> None:
    done = _without_offline("adapters", "--help")
    assert done.returncode == 0, done.stderr
    listing = _without_offline("--help")
    assert listing.returncode == 0 and "serve" in listing.stdout and "train" in listing.stdout


def test_without_the_offline_packages_their_commands_name_the_package() -> None:
    for command, package in (("train", "trainer"), ("finetune", "trainer"), ("eval", "evaluation"),
                             ("calibrate", "evaluation")):
        done = _without_offline(command, "--base-model", "x")
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("error: ") and f"`{package}` package" in line, line
