"""`calibrate`: choose each judge's threshold on labelled data and store it with the model.

The threshold is the lowest score whose false-positive rate on the data stays at or below the
target (5 % by default): the most recall an operator can have for that many false alarms. It is
written into the thresholds file (service/conscience/thresholds.py) under the judge model, the
style and the framework, with the figures it was chosen on — including those of a threshold
chosen the same way on four folds and measured on the fifth, which is what to expect on rows it
has not seen. The settings file (`.env`) is pointed at the thresholds file, so the proxy flags
at it from its next start; every other line of `.env` is kept as it was.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from service.conscience.thresholds import CalibratedThreshold
from service.settings import variable

if TYPE_CHECKING:  # judge_eval needs numpy: the [eval] extra, checked before a command runs
    from evaluation.datasets import LabelledRow
    from evaluation.judge_eval import ScorerResult

THRESHOLDS_VARIABLE = variable("judge.thresholds_path")  # what `calibrate` writes to .env


class CalibrationError(ValueError):
    pass


def data_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def calibrated_threshold(
    result: ScorerResult, rows: Sequence[LabelledRow], *, target_fpr: float, data: Path
) -> CalibratedThreshold:
    """The threshold at `target_fpr` on the scored rows of `result`, with its figures."""
    from evaluation.metrics import confusion_at, cross_validated_at_fpr, threshold_for_fpr

    truth_by_id = {row.id: row.should_flag for row in rows}
    ids = list(result.scores)
    truth = [truth_by_id[row_id] for row_id in ids]
    scores = [result.scores[row_id] for row_id in ids]
    if not any(truth) or all(truth):
        raise CalibrationError(f"{result.name}: the data needs rows of both labels to calibrate on")
    chosen = threshold_for_fpr(truth, scores, target_fpr)
    assert chosen is not None  # scores exist: both labels do
    threshold = min(1.0, float(chosen.threshold))
    held_out = cross_validated_at_fpr(truth, scores, target_fpr)
    at = confusion_at(truth, scores, threshold)
    figures = {
        "rows": len(ids),
        "failed": result.failed,  # rows the judge gave no verdict on (left out of the figures)
        "roc_auc": result.roc_auc,
        "recall": at.recall,
        "fpr": at.false_positive_rate,
        "cross_validated": None if held_out is None else {
            "recall": held_out.recall, "fpr": held_out.false_positive_rate, "folds": 5,
        },
        "data": data.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return CalibratedThreshold(threshold, target_fpr, data_sha256(data), figures)


def write_setting(env_file: Path, variable: str, value: str) -> None:
    """Set `variable=value` in the dotenv file (created if missing), atomically."""
    lines = env_file.read_text(encoding="utf-8").splitlines() if env_file.is_file() else []
    pattern = re.compile(rf"^\s*(?:export\s+)?{re.escape(variable)}\s*=")
    replaced = [f"{variable}={value}" if pattern.match(line) else line for line in lines]
    if not any(pattern.match(line) for line in lines):
        replaced.append(f"{variable}={value}")
    env_file.parent.mkdir(parents=True, exist_ok=True)
    descriptor, staging = tempfile.mkstemp(dir=env_file.parent, prefix=f".{env_file.name}.")
    with os.fdopen(descriptor, "w", encoding="utf-8") as sink:
        sink.write("\n".join(replaced) + "\n")
    if env_file.is_file():  # keep the file's permissions: a .env may hold keys
        os.chmod(staging, env_file.stat().st_mode & 0o777)
    os.replace(staging, env_file)
