"""The documentation site (mkdocs.yml, docs/): it builds with --strict, every page is in the nav,
the settings page's table is `Settings`, and every `conscience …` command written in the README or
a page exists with its options."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts.settings_table import settings_table
from tests.cli_commands import problems

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _pages() -> list[Path]:
    """The Markdown files mkdocs builds: every .md under docs/."""
    return sorted(DOCS.rglob("*.md"))


def _nav_pages(entries: object) -> list[str]:
    """The page paths named anywhere in mkdocs.yml's `nav` (sections nest; URLs are not pages)."""
    if isinstance(entries, str):
        return [] if re.match(r"[a-z]+://", entries) else [entries]
    if isinstance(entries, list):
        return [page for entry in entries for page in _nav_pages(entry)]
    if isinstance(entries, dict):
        return [page for value in entries.values() for page in _nav_pages(value)]
    return []


def test_the_settings_page_table_is_the_settings() -> None:
    page = (DOCS / "settings.md").read_text(encoding="utf-8")
    assert settings_table() in page, (
        "docs/settings.md's settings table differs from Settings: run `python -m scripts.settings_table --write`"
    )


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    in_nav = _nav_pages(config["nav"])
    on_disk = [page.relative_to(DOCS).as_posix() for page in _pages()]
    assert sorted(set(on_disk) - set(in_nav)) == [], "pages under docs/ missing from mkdocs.yml's nav"
    assert sorted(set(in_nav) - set(on_disk)) == [], "nav entries in mkdocs.yml without a page"
    assert len(in_nav) == len(set(in_nav)), "a page is in the nav twice"


def test_the_site_builds_with_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs is a dev dependency: `make test` installs it")
    pytest.importorskip("material", reason="mkdocs-material is a dev dependency: `make test` installs it")
    # NO_MKDOCS_2_WARNING: Material's end-of-life banner, not a problem of these pages.
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "security" / "index.html").is_file()


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, indented ones (inside list items) dedented."""
    blocks = re.findall(r"^( *)```(\w*)\n(.*?)^\1```", text, flags=re.DOTALL | re.MULTILINE)
    return [(language, re.sub(rf"(?m)^{indent}", "", body)) for indent, language, body in blocks]


def _commands(text: str) -> list[list[str]]:
    """Every `conscience …` command line in the shell blocks of `text`, continuations joined."""
    commands = []
    for language, block in _fenced_blocks(text):
        if language not in ("", "bash", "sh", "cron"):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            if not re.search(r"(^|[\s/])conscience\s", line):
                continue  # curl's JSON bodies span lines and do not split as shell words
            words = shlex.split(line, comments=True)
            # also `.venv/bin/conscience …`, `docker compose exec trainer conscience …`; not a
            # cron line's `CONSCIENCE_DB_URL=…@db/conscience` before the command
            starts = [i for i, word in enumerate(words)
                      if word.rsplit("/", 1)[-1] == "conscience" and "=" not in word]
            if starts:
                commands.append(words[starts[0] + 1 :])
    return commands


def _written_commands() -> dict[str, list[list[str]]]:
    texts = [ROOT / "README.md", *_pages()]
    return {path.relative_to(ROOT).as_posix(): _commands(path.read_text(encoding="utf-8")) for path in texts}


def test_every_conscience_command_in_the_readme_and_the_pages_exists_with_its_options() -> None:
    written = _written_commands()
    assert sum(len(commands) for commands in written.values()) >= 35  # 37 when the README's text moved here
    wrong = [f"{path}: {problem}" for path, commands in written.items() for words in commands
             for problem in problems(words)]
    assert wrong == []


def test_a_wrong_command_on_a_page_is_caught() -> None:
    # The extraction itself: an indented block inside a list item and a continued line count too.
    page = "1. Run:\n\n    ```bash\n    conscience triples list \\\n        --no-such-option\n    ```\n"
    [words] = _commands(page)
    assert problems(words) == ["triples list --no-such-option: no option --no-such-option"]
