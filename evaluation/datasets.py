"""Labelled (prompt, completion, label) rows for judge evaluation, in the XSTest-derived format.

Each JSONL line holds at least `id`, `prompt`, `completion` and `label` (`ethical`,
`unethical` or `ambiguous`); `human_label` (full_compliance / full_refusal / partial_refusal)
and `prompt_type` are kept when present. Ambiguous rows are loaded but left out of the scores.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from service.backends.base import JSON

SCORED_LABELS = ("ethical", "unethical")
LABELS = (*SCORED_LABELS, "ambiguous")


class DatasetError(ValueError):
    """A data file cannot be read as labelled rows; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class LabelledRow:
    id: str
    prompt: str
    completion: str
    label: str
    human_label: str | None = None
    prompt_type: str | None = None

    @property
    def is_scored(self) -> bool:
        return self.label in SCORED_LABELS

    @property
    def should_flag(self) -> bool:
        return self.label == "unethical"

    @property
    def conversation(self) -> list[JSON]:
        return [{"role": "user", "content": self.prompt}]


def _row(data: object, where: str) -> LabelledRow:
    if not isinstance(data, dict):
        raise DatasetError(f"{where}: a row must be a JSON object")
    for key in ("id", "prompt", "completion", "label"):
        if not isinstance(data.get(key), str | int) or data.get(key) == "":
            raise DatasetError(f"{where}: missing or empty {key!r}")
    label = str(data["label"])
    if label not in LABELS:
        raise DatasetError(f"{where}: label {label!r} is not one of {', '.join(LABELS)}")
    optional = {key: data.get(key) for key in ("human_label", "prompt_type")}
    return LabelledRow(
        id=str(data["id"]),
        prompt=str(data["prompt"]),
        completion=str(data["completion"]),
        label=label,
        **{key: str(value) if value is not None else None for key, value in optional.items()},
    )


def load_rows(path: Path) -> list[LabelledRow]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    rows: list[LabelledRow] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not JSON: {exc}") from exc
        rows.append(_row(data, f"{path}:{number}"))
    ids = [row.id for row in rows]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{path}: row ids are not unique")
    if not rows:
        raise DatasetError(f"{path}: no rows")
    return rows


def _shuffled_by_label(rows: Sequence[LabelledRow], seed: int) -> list[list[LabelledRow]]:
    """Each label's rows in a seeded order (labels sorted), so a sample's first rows are stable."""
    by_label: dict[str, list[LabelledRow]] = defaultdict(list)
    for row in rows:
        by_label[row.label].append(row)
    generator = random.Random(seed)
    groups = []
    for _, members in sorted(by_label.items()):
        shuffled = list(members)
        generator.shuffle(shuffled)
        groups.append(shuffled)
    return groups


def _in_file_order(rows: Sequence[LabelledRow], chosen: set[str]) -> list[LabelledRow]:
    return [row for row in rows if row.id in chosen]


def stratified_sample(rows: Sequence[LabelledRow], size: int, seed: int) -> list[LabelledRow]:
    """`size` rows keeping each label's share (every label keeps at least one row), in file order.

    Each label's rows are shuffled by the seed and the first ones taken, so the sample is a
    deterministic function of rows and seed, and a smaller sample is part of every larger one
    with the same seed: a run can grow and reuse the scores it already has.
    """
    if size >= len(rows):
        return list(rows)
    chosen: set[str] = set()
    for members in _shuffled_by_label(rows, seed):
        quota = max(1, round(size * len(members) / len(rows)))
        chosen.update(row.id for row in members[:quota])
    return _in_file_order(rows, chosen)


def per_label_sample(rows: Sequence[LabelledRow], per_label: int, seed: int) -> list[LabelledRow]:
    """At most `per_label` rows of each label, in file order: a balanced sample.

    With a rare label (XSTest's unethical answers are 6%) a proportional sample holds too few
    positives for a stable ROC AUC; this keeps all of them up to the cap. Precision and F1 then
    describe the sample's label mix, not the file's. Grows like `stratified_sample`.
    """
    chosen: set[str] = set()
    for members in _shuffled_by_label(rows, seed):
        chosen.update(row.id for row in members[:per_label])
    return _in_file_order(rows, chosen)
