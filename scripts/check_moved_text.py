"""Check that text moved out of a Markdown file lost no command or figure (issue 27's move of the
README into docs/).

    git show 2379a3e:README.md > /tmp/old-readme.md
    python scripts/check_moved_text.py /tmp/old-readme.md

Against README.md plus every page under docs/, it requires: every fenced code block verbatim,
every table row (whitespace aside), every number-with-unit phrase, and every number at least as
often as before. It prints, for reading, the old lines with a digit that are not there verbatim
(reflowed or edited on purpose). Exit 1 when something required is missing.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNIT = r"(?:%|ms|s|min|MiB|GB|KiB|KB|K|×|req/s|tokens|characters|rows|B)"
NUMBER = re.compile(r"(?<![\w.])\d[\d,.]*\d|(?<![\w.])\d(?!\w)")


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def missing(old: str, new: str) -> list[str]:
    """What of `old`'s blocks, table rows, figures and numbers `new` lacks (empty: nothing)."""
    flat = _flat(new)
    lost = [f"block: {block[:100]!r}" for block in re.findall(r"^```\w*\n(.*?)^```", old, flags=re.S | re.M)
            if block not in new]
    lost += [f"table row: {row[:120]}" for row in old.splitlines() if row.startswith("|") and _flat(row) not in flat]
    lost += [f"figure: {figure}" for figure in sorted(set(re.findall(rf"\d[\d,.]*\s?{UNIT}", old)))
             if _flat(figure) not in flat]
    before, after = Counter(NUMBER.findall(old)), Counter(NUMBER.findall(new))
    lost += [f"number {number}: {count} before, {after[number]} now" for number, count in before.items()
             if after[number] < count]
    return lost


def main(argv: list[str]) -> int:
    old = Path(argv[0]).read_text(encoding="utf-8")
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    new = "\n".join(page.read_text(encoding="utf-8") for page in pages)
    flat = _flat(new)
    edited = [line for line in old.splitlines()
              if re.search(r"\d", line) and not line.startswith(("|", "#")) and _flat(line.lstrip("- ")) not in flat]
    print(f"{len(edited)} old lines with a digit are not verbatim (reflowed or edited):")
    print("\n".join(f"  {line[:140]}" for line in edited))
    lost = missing(old, new)
    print("\n".join(lost) if lost else "every block, table row, figure and number is still there")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
