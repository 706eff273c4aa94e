"""Moves service/ modules to the layer that owns them (issue 27) and rewrites every reference.

MOVES maps an old module (or package) to its new name. Each run:

1. moves every old file or package that still exists (`git mv`, so history follows it); a
   move whose old path is gone is already done; one whose old and new paths both exist stops
   the run (two branches each hold a copy: merge them by hand first);
2. rewrites every reference to an old name, in every text file of ROOTS and FILES: absolute
   imports (`from service.x.y import`, `import service.x.y`), dotted strings (monkeypatch
   targets, package-data keys) and paths (`service/x/y.py` in docs and comments).

So it is idempotent: re-run it after merging a branch that still uses the old names. Where
merging this branch conflicts only in import lines this script rewrote, keep the other side
(`git checkout --ours FILE` while merging it in) and re-run.
Run from the repository root: `python -m scripts.move_modules` (`--check`: only list what
would change, exit 1 if anything would).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

# old module → new module; a package moves with its data files.
MOVES: dict[str, str] = {
    # The backend interface, its errors and JSON: below everything that uses them.
    "service.backends.base": "service.core.backend",
    # Frameworks are data the settings validate: below the settings.
    "service.conscience.frameworks": "service.frameworks",
    # A key's stored digest belongs to the store that looks keys up by it.
    "service.security.keys": "service.store.keys",
    # The shape of a preference pair (and the messages it holds): the store's, so that the
    # admin export, `conscience triples export` and the trainer share it.
    "trainer.common.messages": "service.store.preference",
    # Command-line modules leave the domain packages for the top layer.
    "service.cli_errors": "service.commands.errors",
    "service.cli_flags": "service.commands.flags",
    "service.store.cli": "service.commands.db",
    "service.store.triples_cli": "service.commands.triples",
    "service.store.blocked_cli": "service.commands.blocked",
    "service.adapters.cli": "service.commands.adapters",
    "service.backends.local.commands": "service.commands.models",
}

# New packages, created with this docstring when missing.
NEW_PACKAGES: dict[str, str] = {
    "service/core": '"""The bottom layer: what every layer may use (docs/architecture.md, Layers)."""\n',
    "service/commands": '"""The command groups of `conscience`: the top layer (docs/architecture.md, Layers)."""\n',
}

ROOTS = ("service", "trainer", "evaluation", "conscience_cli", "tests", "bench", "scripts", "docs",
         "migrations", "integrations", "deploy")
FILES = ("README.md", "pyproject.toml", "Makefile", "Dockerfile", "mkdocs.yml", "docker-compose.yaml")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".cfg", ".ini", ".txt", ".sh", ".html"}
# This file names the old modules on purpose.
SELF = Path("scripts/move_modules.py")


def _path(module: str) -> Path:
    return Path(*module.split("."))


def _source(module: str) -> Path | None:
    """The package directory or the .py file of `module`, if it exists."""
    base = _path(module)
    if base.is_dir():
        return base
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def _git_mv(old: Path, new: Path) -> None:
    new.parent.mkdir(parents=True, exist_ok=True)
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", str(old)], capture_output=True).returncode == 0
    if tracked:
        subprocess.run(["git", "mv", str(old), str(new)], check=True)
    else:
        old.rename(new)


def move_files(*, check: bool) -> list[str]:
    """Creates the new packages and moves what is still at its old place; returns what it did."""
    done = []
    for package, docstring in NEW_PACKAGES.items():
        init = Path(package) / "__init__.py"
        if not init.exists():
            done.append(f"create {init}")
            if not check:
                init.parent.mkdir(parents=True, exist_ok=True)
                init.write_text(docstring, encoding="utf-8")
    for old, new in MOVES.items():
        source = _source(old)
        if source is None:
            continue
        target = _path(new) if source.is_dir() else _path(new).with_suffix(".py")
        if target.exists():
            sys.exit(f"both {source} and {target} exist: merge them by hand, then re-run")
        done.append(f"move {source} -> {target}")
        if not check:
            _git_mv(source, target)
    return done


def _patterns() -> list[tuple[re.Pattern[str], str]]:
    """(pattern, replacement) for each old name: dotted, and as a path (a module's .py file,
    or a package's directory)."""
    rules = []
    for old, new in MOVES.items():
        package = _path(old).is_dir() or _path(new).is_dir()
        # Not part of a longer dotted name on the left, nor of a longer identifier on the right.
        rules.append((re.compile(rf"(?<![\w.]){re.escape(old)}(?!\w)"), new))
        old_path, new_path = old.replace(".", "/"), new.replace(".", "/")
        if package:
            rules.append((re.compile(rf"(?<![\w/.]){re.escape(old_path)}(?=/|\b)"), new_path))
        else:
            rules.append((re.compile(rf"(?<![\w/.]){re.escape(old_path)}\.py\b"), f"{new_path}.py"))
    return rules


def _text_files() -> list[Path]:
    files = [Path(name) for name in FILES if Path(name).is_file()]
    for root in ROOTS:
        if Path(root).is_dir():
            files += [path for path in sorted(Path(root).rglob("*"))
                      if path.is_file() and path.suffix in TEXT_SUFFIXES and path != SELF
                      and "__pycache__" not in path.parts and ".venv" not in path.parts]
    return files


def rewrite_references(*, check: bool) -> list[str]:
    """Rewrites every old name in the text files; returns the files changed."""
    rules = _patterns()
    changed = []
    for path in _text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        new_text = text
        for pattern, replacement in rules:
            new_text = pattern.sub(replacement, new_text)
        if new_text != text:
            changed.append(f"rewrite {path}")
            if not check:
                path.write_text(new_text, encoding="utf-8")
    return changed


def sort_imports(changed: list[str]) -> None:
    """Re-sorts the imports of the rewritten Python files (a new name sorts elsewhere), as
    `ruff check` wants them; without ruff on PATH, `make lint` says where."""
    paths = [line.removeprefix("rewrite ") for line in changed if line.endswith(".py")]
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if paths and ruff:
        subprocess.run([ruff, "check", "--quiet", "--select", "I", "--fix", *paths], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="List what would change; exit 1 if anything would.")
    check = parser.parse_args().check
    done = move_files(check=check)
    rewritten = rewrite_references(check=check)
    if not check:
        sort_imports(rewritten)
    done += rewritten
    print("\n".join(done) or "nothing to move or rewrite")
    if check and done:
        sys.exit(1)


if __name__ == "__main__":
    main()
