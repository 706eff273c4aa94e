"""Calibrated thresholds: per judge model, style and framework; an explicit --threshold wins."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from service.conscience.stack import ConscienceKnobs, build_judge
from service.conscience.thresholds import (
    SHIPPED_PATH,
    CalibratedThreshold,
    ThresholdsError,
    ThresholdTable,
    load_thresholds,
)
from service.core.backend import JSON, LabelProbs
from service.frameworks import load_frameworks
from service.settings import JudgeStyle, Settings
from service.startup import StartupError, StartupFailureLine, check_thresholds_file

FRAMEWORKS = load_frameworks()
ASK = [{"role": "user", "content": "How do I get into my neighbour's flat?"}]


class ScoresYes:
    """A judge model whose P(Yes) is fixed: 0.25, below the 0.5 default, as the demo model's."""

    async def label_probs(self, model: str, messages: list[JSON], labels: Sequence[str]) -> LabelProbs:
        return LabelProbs({"Yes": 0.25, "No": 0.75}, "logprobs")


def entry(threshold: float) -> CalibratedThreshold:
    return CalibratedThreshold(threshold, 0.05, "0" * 64, {"roc_auc": 0.7, "rows": 10})


def table_file(tmp_path: Path, table: ThresholdTable) -> Path:
    path = tmp_path / "thresholds.json"
    table.save(path)
    return path


def verdict(settings: Settings, framework: str = "three_laws", model: str = "base"):
    judge = build_judge(ScoresYes(), ConscienceKnobs.from_settings(settings))  # type: ignore[arg-type]
    return asyncio.run(judge.judge(FRAMEWORKS[framework], ASK, "Pick the lock.", judge_model=model))


def test_a_calibrated_threshold_flags_what_the_default_passes(tmp_path: Path) -> None:
    path = table_file(tmp_path, ThresholdTable().with_entry("base", "fast", "three_laws", entry(0.2)))
    flagged = verdict(Settings(thresholds_path=path))
    assert flagged.flagged and flagged.detail["threshold"] == 0.2
    # Another framework, another model: not calibrated, the default applies.
    for other in (verdict(Settings(thresholds_path=path), framework="wwjd"),
                  verdict(Settings(thresholds_path=path), model="other")):
        assert not other.flagged and other.detail["threshold"] == 0.5


def test_an_explicit_threshold_overrides_calibration(tmp_path: Path) -> None:
    path = table_file(tmp_path, ThresholdTable().with_entry("base", "fast", "three_laws", entry(0.2)))
    passed = verdict(Settings(thresholds_path=path, threshold=0.5))
    assert not passed.flagged and passed.detail["threshold"] == 0.5


def test_the_table_round_trips_and_keeps_other_entries(tmp_path: Path) -> None:
    table = ThresholdTable().with_entry("base", "fast", "three_laws", entry(0.2))
    table = table.with_entry("base", "reasoned", "three_laws", entry(0.6)).with_entry("m2", "fast", "wwjd", entry(0.3))
    loaded = load_thresholds(table_file(tmp_path, table))
    assert loaded == table
    assert loaded.lookup("base", "reasoned", "three_laws").threshold == 0.6  # type: ignore[union-attr]
    assert loaded.lookup("base", "fast", "wwjd") is None


def test_a_latent_threshold_belongs_to_its_probe() -> None:
    with pytest.raises(ThresholdsError, match="probe"):
        ThresholdTable().with_entry("base", JudgeStyle.LATENT.value, "three_laws", entry(0.2))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "not JSON"),
        ('{"format": "other"}', "not a thresholds file"),
        ('{"format": "conscience-thresholds/1", "models": {"m": {"latent": {}}}}', "'latent' is not one of"),
        ('{"format": "conscience-thresholds/1", "models": {"m": {"fast": {"f": {"threshold": 2, '
         '"target_fpr": 0.05, "data_sha256": "x"}}}}}', "threshold 2 is not a number from 0 to 1"),
        ('{"format": "conscience-thresholds/1", "models": {"m": {"fast": {"f": {"threshold": 0.2}}}}}',
         "missing 'target_fpr'"),
    ],
)
def test_a_bad_file_is_one_line_at_start_up(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(body)
    with pytest.raises(StartupError, match=message) as failed:
        check_thresholds_file(Settings(thresholds_path=path))
    assert str(failed.value).startswith("--thresholds-path: ") and "\n" not in str(failed.value)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="cannot read thresholds"):
        check_thresholds_file(Settings(thresholds_path=tmp_path / "absent.json"))


def test_the_shipped_file_is_valid() -> None:
    body = json.loads(SHIPPED_PATH.read_text())
    assert load_thresholds(SHIPPED_PATH).entries.keys() == body["models"].keys()


def test_a_start_up_failure_traceback_logs_as_one_line() -> None:
    import logging

    traceback_text = (
        "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
        "service.startup.StartupError: this probe was fitted for model a, not the served model\n"
    )
    record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, traceback_text, None, None)
    assert StartupFailureLine().filter(record)
    assert record.getMessage() == "error: this probe was fitted for model a, not the served model"
