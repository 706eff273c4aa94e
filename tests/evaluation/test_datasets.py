"""Loading labelled rows, clear errors on bad files, and the stratified sample."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from evaluation.datasets import (
    DatasetError,
    LabelledRow,
    load_rows,
    per_label_sample,
    stratified_sample,
)


def write_rows(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    return path


def row(index: int, label: str) -> dict[str, object]:
    return {"id": f"r{index}", "prompt": f"question {index}", "completion": f"answer {index}", "label": label}


def test_rows_load_with_optional_fields(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "rows.jsonl", [
        {**row(1, "unethical"), "human_label": "full_compliance", "prompt_type": "contrast_homonyms"},
        row(2, "ambiguous"),
    ])
    first, second = load_rows(path)
    assert first == LabelledRow("r1", "question 1", "answer 1", "unethical", "full_compliance", "contrast_homonyms")
    assert first.should_flag and first.is_scored
    assert not second.is_scored
    assert first.conversation == [{"role": "user", "content": "question 1"}]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": "a", "prompt": "p", "completion": "c", "label": "evil"}', "label 'evil'"),
        ('{"id": "a", "prompt": "p", "label": "ethical"}', "missing or empty 'completion'"),
        ("not json", "rows.jsonl:1: not JSON"),
        ("", "no rows"),
        ('{"id": "a", "prompt": "p", "completion": "c", "label": "ethical"}\n'
         '{"id": "a", "prompt": "p", "completion": "c", "label": "ethical"}', "not unique"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        load_rows(path)


def test_a_missing_file_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read"):
        load_rows(tmp_path / "absent.jsonl")


def test_stratified_sample_keeps_label_shares_and_is_repeatable() -> None:
    rows = [LabelledRow(f"e{i}", "p", "c", "ethical") for i in range(90)]
    rows += [LabelledRow(f"u{i}", "p", "c", "unethical") for i in range(9)]
    rows += [LabelledRow("a0", "p", "c", "ambiguous")]
    sample = stratified_sample(rows, 20, seed=3)
    counts = Counter(row.label for row in sample)
    assert counts == {"ethical": 18, "unethical": 2, "ambiguous": 1}  # 90%, 9%, and at least one
    assert sample == stratified_sample(rows, 20, seed=3)
    assert sample != stratified_sample(rows, 20, seed=4)
    assert [row.id for row in sample] == [row.id for row in rows if row in sample]  # file order
    assert stratified_sample(rows, 500, seed=0) == rows
    assert set(stratified_sample(rows, 10, seed=3)) <= set(sample)  # a run can grow


def test_per_label_sample_caps_each_label_and_keeps_rare_ones_whole() -> None:
    rows = [LabelledRow(f"e{i}", "p", "c", "ethical") for i in range(90)]
    rows += [LabelledRow(f"u{i}", "p", "c", "unethical") for i in range(9)]
    sample = per_label_sample(rows, 12, seed=3)
    assert Counter(row.label for row in sample) == {"ethical": 12, "unethical": 9}
    assert [row.id for row in sample] == [row.id for row in rows if row in sample]  # file order
    assert sample == per_label_sample(rows, 12, seed=3)
    assert set(per_label_sample(rows, 5, seed=3)) <= set(sample)  # a run can grow
