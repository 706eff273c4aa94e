"""Calibrated judge thresholds: per judge model, per verdict style and framework.

A score means something different under each style (a Yes/No probability, a stated confidence)
and each framework's question, and a small model's scores sit far from 0.5 (the demo model's
Yes/No scores all fall between 0.10 and 0.30), so one global threshold flags nothing or
everything. `conscience calibrate` chooses each threshold on labelled data at a target
false-positive rate and writes it here with the figures it was chosen on; the judge flags at it.

The latent style is not in this file: its threshold is part of its probe
(service/conscience/probe.py), chosen when the probe is fitted, because it belongs to those
weights and nothing else.

File format (`conscience-thresholds/1`), one JSON object:

    {"format": "conscience-thresholds/1",
     "models": {"<judge model>": {"fast": {"three_laws": {"threshold": 0.21, "target_fpr": 0.05,
                                                        "data_sha256": "…", "figures": {…}}}}}}

The judge model is named as the backend serves it (the frozen base: a fine-tune's adapter never
judges). Who wins, for one verdict: an explicitly set `--threshold` (an operator's override),
else the calibrated entry for (model, style, framework), else `--threshold`'s default.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "conscience-thresholds/1"
SHIPPED_PATH = Path(__file__).parent / "calibrated" / "thresholds.json"
CALIBRATED_STYLES = ("fast", "reasoned")  # latent: the probe holds its own threshold


class ThresholdsError(ValueError):
    """A thresholds file that cannot be read, or an entry that is not a threshold."""


@dataclass(frozen=True, slots=True)
class CalibratedThreshold:
    threshold: float
    target_fpr: float
    data_sha256: str
    figures: dict[str, Any] = field(default_factory=dict)  # as measured when it was chosen

    def __post_init__(self) -> None:
        for name in ("threshold", "target_fpr"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not (
                math.isfinite(value) and 0.0 <= value <= 1.0
            ):
                raise ThresholdsError(f"{name} {value!r} is not a number from 0 to 1")


@dataclass(frozen=True)
class ThresholdTable:
    """model -> style -> framework -> CalibratedThreshold."""

    entries: Mapping[str, Mapping[str, Mapping[str, CalibratedThreshold]]] = field(default_factory=dict)

    def lookup(self, model: str, style: str, framework: str) -> CalibratedThreshold | None:
        return self.entries.get(model, {}).get(style, {}).get(framework)

    def with_entry(
        self, model: str, style: str, framework: str, entry: CalibratedThreshold
    ) -> ThresholdTable:
        if style not in CALIBRATED_STYLES:
            raise ThresholdsError(
                f"style {style!r} has no calibrated threshold here; one of {CALIBRATED_STYLES} "
                "(a latent threshold is part of its probe: `conscience calibrate --probe`)"
            )
        models = {name: {s: dict(f) for s, f in styles.items()} for name, styles in self.entries.items()}
        models.setdefault(model, {}).setdefault(style, {})[framework] = entry
        return ThresholdTable(models)

    def to_json(self) -> str:
        models = {
            model: {style: {name: asdict(entry) for name, entry in sorted(frameworks.items())}
                    for style, frameworks in sorted(styles.items())}
            for model, styles in sorted(self.entries.items())
        }
        return json.dumps({"format": FORMAT, "models": models}, indent=1)

    @classmethod
    def from_json(cls, text: str, *, source: str = "thresholds") -> ThresholdTable:
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise ThresholdsError(f"{source}: not JSON: {exc}") from exc
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise ThresholdsError(f"{source}: not a thresholds file (format is not {FORMAT!r})")
        models = body.get("models")
        if not isinstance(models, dict):
            raise ThresholdsError(f"{source}: 'models' must be an object")
        entries: dict[str, dict[str, dict[str, CalibratedThreshold]]] = {}
        for model, styles in models.items():
            if not isinstance(styles, dict):
                raise ThresholdsError(f"{source}: model {model!r} must map styles to frameworks")
            for style, frameworks in styles.items():
                if style not in CALIBRATED_STYLES or not isinstance(frameworks, dict):
                    raise ThresholdsError(
                        f"{source}: {model!r}: {style!r} is not one of {CALIBRATED_STYLES} "
                        "mapping frameworks to thresholds"
                    )
                for name, raw in frameworks.items():
                    where = f"{source}: {model!r} {style} {name!r}"
                    if not isinstance(raw, dict):
                        raise ThresholdsError(f"{where}: must be an object")
                    try:
                        entry = CalibratedThreshold(
                            threshold=raw["threshold"], target_fpr=raw["target_fpr"],
                            data_sha256=str(raw["data_sha256"]), figures=dict(raw.get("figures") or {}),
                        )
                    except KeyError as exc:
                        raise ThresholdsError(f"{where}: missing {exc}") from None
                    except ThresholdsError as exc:
                        raise ThresholdsError(f"{where}: {exc}") from None
                    entries.setdefault(model, {}).setdefault(style, {})[name] = entry
        return cls(entries)

    def save(self, path: Path) -> None:
        """Atomically: a reader never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(descriptor, "w", encoding="utf-8") as sink:
            sink.write(self.to_json() + "\n")
        os.replace(staging, path)


def load_thresholds(path: Path) -> ThresholdTable:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ThresholdsError(f"cannot read thresholds {path}: {exc.strerror or exc}") from None
    return ThresholdTable.from_json(text, source=str(path))


def configured_thresholds(path: Path | None, *, overridden: bool) -> ThresholdTable:
    """The table the judge flags at: `path`, else the shipped one; empty when an explicitly set
    `--threshold` overrides calibration."""
    if overridden:
        return ThresholdTable()
    return load_thresholds(path or SHIPPED_PATH)
