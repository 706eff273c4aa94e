"""`calibrate`: pick the judge threshold from an evaluation and write it into the settings file.

The settings file is the proxy's `.env` (CONSCIENCE_* lines, read by pydantic-settings). Only
the threshold line is replaced (or appended); every other line is kept as it was.
"""

from __future__ import annotations

import os
import re
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # judge_eval needs numpy: the [eval] extra, checked before a command runs
    from evaluation.judge_eval import ScorerResult

THRESHOLD_VARIABLE = "CONSCIENCE_THRESHOLD"


class Target(StrEnum):
    BEST_F1 = "best-f1"
    FPR_5 = "fpr-5"


class CalibrationError(ValueError):
    pass


def chosen_threshold(result: ScorerResult, target: Target) -> float:
    choice = result.best_f1 if target is Target.BEST_F1 else result.fpr_at_most_5pct
    if choice is None:
        raise CalibrationError(f"{result.name}: no scored rows to calibrate on")
    if target is Target.BEST_F1 and result.at_threshold["tp"] + result.at_threshold["fn"] == 0:
        raise CalibrationError(f"{result.name}: the data has no rows that should be flagged")
    return min(1.0, float(choice["threshold"]))


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
