"""The README is the front page: short, with the two commands CI runs, and links that lead on."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MAX_LINES = 200


def test_the_readme_stays_short() -> None:
    # Everything else belongs on a page of the documentation site (docs/, mkdocs.yml).
    lines = len(README.splitlines())
    assert lines <= MAX_LINES, f"README.md has {lines} lines (at most {MAX_LINES}): move the detail to docs/"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in README and "make run" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_readme_links_lead_to_existing_pages() -> None:
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert "docs/security.md" in local  # issue 26: the security summary points to the whole page
    assert [link for link in local if not (ROOT / link).is_file()] == []
