"""Labelled (prompt, completion, label) rows for judge evaluation, read from public sets as they come.

A file is read by its name: `.csv` as CSV with a header row, `.json` as one JSON array of rows
(a `.json` file that is not one array is read as JSON lines), anything else (`.jsonl`) as JSON
lines. Each row's format is recognised by its fields, row by row:

- **the project's own** (the XSTest development file): `prompt`, `completion`, `label`
  (`ethical`, `unethical` or `ambiguous`); `id`, `human_label` and `prompt_type` are kept;
- **BeaverTails**: `prompt`, `response`, and `is_safe` (a bool) or `category` (a dict of harm
  categories, also as text in a CSV cell): unsafe, or any category true, is `unethical`;
- **HarmBench classifier sets**: `behavior` (or `prompt`), `generation` (or `response`), and
  `label` (or `human_label`): 1 or "Yes" (the generation is harmful) is `unethical`, 0 or "No"
  `ethical`;
- **XSTest completions**: `prompt`, `completion`, `final_label` (else `human_label`):
  full_compliance, full_refusal or partial_refusal (XSTest's "1_"/"2_"/"3_" prefixes allowed),
  and `type` (or `prompt_type`), where a `contrast_*` type is an unsafe prompt. Full compliance
  with an unsafe prompt is `unethical`, a partial refusal of one `ambiguous`, the rest
  `ethical` (as the development file was derived);
- **PKU-SafeRLHF**: `prompt`, `response_0`, `response_1`, `is_response_0_safe`,
  `is_response_1_safe`: two rows, one per response.

Booleans and 0/1 labels may be JSON values or text ("true", "1", "Yes", ...). A row without an
`id` gets `<file stem>:<n>`, n its line (JSON lines, CSV: the line its record starts on) or its
position in the array (from 1); the two rows of a PKU-SafeRLHF row end in `:0` and `:1`. Ids
must be unique in a file. Anything unreadable is a DatasetError naming the file and line (or
array item). Ambiguous rows are loaded but left out of the scores. Each row knows the name of
its file (`source`): scores are logged per file (evaluation/score_log.py).
"""

from __future__ import annotations

import ast
import csv
import json
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from service.core.backend import JSON

SCORED_LABELS = ("ethical", "unethical")
LABELS = (*SCORED_LABELS, "ambiguous")
XSTEST_LABELS = ("full_compliance", "full_refusal", "partial_refusal")
_TRUE, _FALSE = {"true", "1", "1.0", "yes"}, {"false", "0", "0.0", "no"}


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
    source: str = field(default="", compare=False)  # the name of the file it was read from

    @property
    def is_scored(self) -> bool:
        return self.label in SCORED_LABELS

    @property
    def should_flag(self) -> bool:
        return self.label == "unethical"

    @property
    def conversation(self) -> list[JSON]:
        return [{"role": "user", "content": self.prompt}]


@dataclass(frozen=True, slots=True)
class _Record:
    """One raw row of a file: its fields, where it is (for errors) and its default id."""

    fields: Mapping[str, object]
    where: str
    default_id: str

    def text(self, *keys: str) -> str:
        """The first of `keys` the row has, as non-empty text."""
        for key in keys:
            value = self.fields.get(key)
            if value is not None and value != "":
                if not isinstance(value, str | int):
                    raise DatasetError(f"{self.where}: {key!r} must be text")
                return str(value)
        raise DatasetError(f"{self.where}: missing or empty {' or '.join(map(repr, keys))}")

    def optional(self, *keys: str) -> str | None:
        value = next((self.fields[key] for key in keys if self.fields.get(key) not in (None, "")), None)
        return None if value is None else str(value)

    def row_id(self) -> str:
        """The row's own `id`, else the one made from the file stem and its place."""
        return self.text("id") if self.fields.get("id") not in (None, "") else self.default_id

    def flag(self, key: str) -> bool:
        return _truth(self.fields.get(key), f"{self.where}: {key!r}")


def _truth(value: object, what: str) -> bool:
    """A bool from JSON (true, 1) or text ("True", "1", "Yes"; a CSV cell)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise DatasetError(f"{what} is {value!r}: expected true/false, 1/0 or Yes/No")


def _categories(record: _Record) -> dict[str, object]:
    """BeaverTails' `category`: a dict, or one written as JSON or Python text (a CSV cell)."""
    value = record.fields.get("category")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                pass
    if not isinstance(value, dict):
        raise DatasetError(f"{record.where}: 'category' must be a dict of harm categories")
    return value


# --- one converter per format: a raw record -> its labelled rows ----------------------------


def _own_rows(record: _Record) -> list[LabelledRow]:
    prompt, completion, label = record.text("prompt"), record.text("completion"), record.text("label")
    if label not in LABELS:
        raise DatasetError(f"{record.where}: label {label!r} is not one of {', '.join(LABELS)}")
    return [LabelledRow(
        record.row_id(), prompt, completion, label,
        human_label=record.optional("human_label"), prompt_type=record.optional("prompt_type"),
    )]


def _beavertails_rows(record: _Record) -> list[LabelledRow]:
    if record.fields.get("is_safe") not in (None, ""):
        harmful = not record.flag("is_safe")
    else:
        categories = _categories(record)
        harmful = any(_truth(value, f"{record.where}: category {name!r}") for name, value in categories.items())
    return [LabelledRow(
        record.row_id(), record.text("prompt"), record.text("response"), "unethical" if harmful else "ethical"
    )]


def _harmbench_rows(record: _Record) -> list[LabelledRow]:
    key = next((key for key in ("label", "human_label") if record.fields.get(key) not in (None, "")), None)
    if key is None:
        raise DatasetError(
            f"{record.where}: no label: a HarmBench row needs 'label' or 'human_label' (1/Yes: harmful), "
            "a BeaverTails row 'is_safe' or 'category'"
        )
    harmful = record.flag(key)
    return [LabelledRow(
        record.row_id(), record.text("behavior", "prompt"), record.text("generation", "response"),
        "unethical" if harmful else "ethical",
    )]


def _xstest_rows(record: _Record) -> list[LabelledRow]:
    raw = record.text("final_label", "human_label")
    human = re.sub(r"^\d+_", "", raw.strip().lower())
    if human not in XSTEST_LABELS:
        raise DatasetError(f"{record.where}: XSTest label {raw!r} is not one of {', '.join(XSTEST_LABELS)}")
    prompt_type = record.optional("type", "prompt_type")
    unsafe = (prompt_type or "").startswith("contrast_")
    label = (
        "unethical" if unsafe and human == "full_compliance"
        else "ambiguous" if unsafe and human == "partial_refusal"
        else "ethical"
    )
    return [LabelledRow(
        record.row_id(), record.text("prompt"), record.text("completion"), label,
        human_label=human, prompt_type=prompt_type,
    )]


def _pku_rows(record: _Record) -> list[LabelledRow]:
    base, prompt = record.row_id(), record.text("prompt")
    return [
        LabelledRow(
            f"{base}:{index}", prompt, record.text(f"response_{index}"),
            "ethical" if record.flag(f"is_response_{index}_safe") else "unethical",
        )
        for index in (0, 1)
    ]


Converter = Callable[[_Record], list[LabelledRow]]


def _converter(record: _Record) -> Converter:
    """The format of one raw row, by its fields (the module docstring lists them)."""
    keys = {key for key, value in record.fields.items() if value not in (None, "")}
    if {"response_0", "response_1"} & keys:
        return _pku_rows
    if "completion" in keys and "label" not in keys and {"final_label", "human_label"} & keys:
        return _xstest_rows
    if "response" in keys and {"is_safe", "category"} & keys:
        return _beavertails_rows
    if {"generation", "behavior", "response"} & keys:
        return _harmbench_rows
    if {"id", "prompt", "completion", "label"} & keys:
        return _own_rows  # names the field that is missing
    raise DatasetError(
        f"{record.where}: not a row of a known format (fields: {', '.join(sorted(keys)) or 'none'}); "
        "see evaluation/datasets.py for the accepted ones"
    )


# --- one reader per file kind: a file -> its raw records --------------------------------------


def _object(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: a row must be a JSON object")
    return value


def _json_lines(path: Path, text: str) -> Iterator[_Record]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not JSON: {exc}") from exc
        yield _Record(_object(value, where), where, f"{path.stem}:{number}")


def _json_array(path: Path, text: str) -> Iterator[_Record]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError:
        yield from _json_lines(path, text)  # JSON lines under a .json name
        return
    if not isinstance(items, list):
        raise DatasetError(f"{path}: expected a JSON array of rows (or JSON lines)")
    for number, value in enumerate(items, start=1):
        where = f"{path}: item {number}"
        yield _Record(_object(value, where), where, f"{path.stem}:{number}")


def _csv_rows(path: Path, text: str) -> Iterator[_Record]:
    reader = csv.DictReader(text.splitlines(keepends=True))
    start = 2  # the line after the header
    try:
        for cells in reader:
            where = f"{path}:{start}"
            if None in cells:
                raise DatasetError(f"{where}: more cells than the header has columns")
            yield _Record({key: value for key, value in cells.items() if value not in (None, "")},
                          where, f"{path.stem}:{start}")
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DatasetError(f"{path}:{reader.line_num}: not CSV: {exc}") from exc


def _records(path: Path, text: str) -> Iterator[_Record]:
    suffix = path.suffix.lower()
    reader = _csv_rows if suffix == ".csv" else _json_array if suffix == ".json" else _json_lines
    return reader(path, text)


def load_rows(path: Path) -> list[LabelledRow]:
    """Every labelled row of the file, in file order, in whichever accepted format it comes."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    rows = [
        LabelledRow(row.id, row.prompt, row.completion, row.label, row.human_label, row.prompt_type, path.name)
        for record in _records(path, text)
        for row in _converter(record)(record)
    ]
    if not rows:
        raise DatasetError(f"{path}: no rows")
    seen: set[str] = set()
    for row in rows:
        if row.id in seen:
            raise DatasetError(f"{path}: row ids are not unique ({row.id!r} twice)")
        seen.add(row.id)
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
