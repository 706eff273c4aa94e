"""The settings table of docs/settings.md, generated from `Settings`.

    python -m scripts.settings_table           # print the table
    python -m scripts.settings_table --write   # rewrite the table in docs/settings.md in place

Run from the repository root (`-m` puts it on the path). tests/test_docs.py fails while the page's
table differs from this output, so a new or changed setting is documented in the same commit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.cli import NOT_SERVE_FLAGS
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_PAGE = ROOT / "docs" / "settings.md"
HEADER = "| env var | flag | default | meaning |"


def settings_table() -> str:
    """One row per `Settings` field: env var, `serve` flag (— where there is none), default, meaning."""
    rows = [HEADER, "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        flag = "—" if name in NOT_SERVE_FLAGS else f"`--{name.replace('_', '-')}`"
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `CONSCIENCE_{name.upper()}` | {flag} | `{field.default!s}` | {meaning} |")
    return "\n".join(rows)


def with_table(page: str, table: str) -> str:
    """`page` with its settings table (from the header row to the first line not a row) replaced."""
    lines = page.split("\n")
    try:
        start = lines.index(HEADER)
    except ValueError:
        raise SystemExit(f"error: no settings table (a line {HEADER!r}) in {SETTINGS_PAGE}") from None
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join([*lines[:start], table, *lines[end:]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite the table in {SETTINGS_PAGE.name}")
    args = parser.parse_args(argv)
    table = settings_table()
    if not args.write:
        print(table)
        return 0
    page = SETTINGS_PAGE.read_text(encoding="utf-8")
    updated = with_table(page, table)
    if updated != page:
        SETTINGS_PAGE.write_text(updated, encoding="utf-8")
    print(f"{SETTINGS_PAGE.relative_to(ROOT)}: {'updated' if updated != page else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
