"""The README is the user's manual: its settings table must cover every setting."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from service.settings import Settings
from tests.cli_commands import problems

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [name for name in Settings.model_fields if f"`CONSCIENCE_{name.upper()}`" not in readme]
    assert missing == [], f"README's settings table lacks {missing}"


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
