"""Scores written to disk as they are computed, so a long evaluation can stop and resume.

One JSON line per (scorer fingerprint, data file, row id): the score, or the error when the judge
failed. The file is the row's `source` (its data file's name), so rows of several files that
share an id are scored and kept apart; lines written before files were recorded have none and
match no row read from a file. A rerun with the same scorer protocol reads the finished rows back
and scores only the rest; a changed prompt or model has another fingerprint and starts afresh.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ScoreEntry:
    score: float | None
    error: str | None = None


class ScoreLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[tuple[str, str, str], ScoreEntry] = {}
        # A run killed mid-line leaves no newline: the next line must not be glued to it.
        self._cut_short = False
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            self._cut_short = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    data = json.loads(line)
                    key = (str(data["fingerprint"]), str(data.get("file") or ""), str(data["row"]))
                    entry = ScoreEntry(data.get("score"), data.get("error"))
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                    continue  # a line cut short when a run was killed
                self._entries[key] = entry

    def get(self, fingerprint: str, row_id: str, *, source: str = "") -> ScoreEntry | None:
        return self._entries.get((fingerprint, source, row_id))

    def add(self, fingerprint: str, row_id: str, entry: ScoreEntry, *, scorer: str, source: str = "") -> None:
        self._entries[(fingerprint, source, row_id)] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = {"scorer": scorer, "fingerprint": fingerprint, "file": source, "row": row_id,
                "score": entry.score, "error": entry.error}
        with self.path.open("a", encoding="utf-8") as sink:
            sink.write(("\n" if self._cut_short else "") + json.dumps(line) + "\n")
        self._cut_short = False
