"""The README is the user's manual: its settings table must cover every setting."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from service.cli import NOT_SERVE_FLAGS
from service.settings import Settings
from tests.cli_commands import problems

ROOT = Path(__file__).resolve().parents[1]


def settings_table() -> str:
    """The README's settings table, generated from `Settings` (print it to update the README)."""
    rows = ["| env var | flag | default | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        flag = "—" if name in NOT_SERVE_FLAGS else f"`--{name.replace('_', '-')}`"
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `CONSCIENCE_{name.upper()}` | {flag} | `{field.default!s}` | {meaning} |")
    return "\n".join(rows)


def test_the_readme_settings_table_is_the_settings() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert settings_table() in readme, (
        "README's settings table differs from Settings: replace it with the output of "
        "`python -c 'from tests.test_readme import settings_table; print(settings_table())'`"
    )


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make test" in readme and "make run" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def _readme_commands() -> list[list[str]]:
    """Every `conscience …` command line in the README's code blocks, continuations joined."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    fenced = re.findall(r"^```(\w*)\n(.*?)^```", readme, flags=re.DOTALL | re.MULTILINE)
    commands = []
    for block in (text for language, text in fenced if language in ("", "bash", "sh")):
        for line in block.replace("\\\n", " ").splitlines():
            if not re.search(r"(^|[\s/])conscience\s", line):
                continue  # curl's JSON bodies span lines and do not split as shell words
            words = shlex.split(line, comments=True)
            starts = [i for i, word in enumerate(words) if word.rsplit("/", 1)[-1] == "conscience"]
            if starts:  # also `.venv/bin/conscience …`, `docker compose exec trainer conscience …`
                commands.append(words[starts[0] + 1 :])
    return commands


def test_every_conscience_command_in_the_readme_exists_with_its_options() -> None:
    commands = _readme_commands()
    assert len(commands) >= 10
    wrong = [problem for words in commands for problem in problems(words)]
    assert wrong == []
