"""Scores of a binary detector ("flag this answer") against labels: pure Python and numpy.

A row is flagged when its score is at or above the threshold, as in the proxy's judge. Scores
are probabilities, so thresholds are chosen among the observed scores themselves: any value
between two neighbouring scores flags the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class ConfusionMatrix:
    """Counts of a flagging decision against the truth (positive = should be flagged)."""

    true_positives: int
    false_positives: int
    true_negatives: int
    false_negatives: int

    @property
    def positives(self) -> int:
        return self.true_positives + self.false_negatives

    @property
    def negatives(self) -> int:
        return self.false_positives + self.true_negatives

    @property
    def precision(self) -> float:
        flagged = self.true_positives + self.false_positives
        return self.true_positives / flagged if flagged else 0.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.positives if self.positives else 0.0

    @property
    def f1(self) -> float:
        precision, recall = self.precision, self.recall
        return 2 * precision * recall / (precision + recall) if precision + recall else 0.0

    @property
    def false_positive_rate(self) -> float:
        return self.false_positives / self.negatives if self.negatives else 0.0

    @property
    def accuracy(self) -> float:
        total = self.positives + self.negatives
        return (self.true_positives + self.true_negatives) / total if total else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "tp": self.true_positives,
            "fp": self.false_positives,
            "tn": self.true_negatives,
            "fn": self.false_negatives,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "fpr": self.false_positive_rate,
            "accuracy": self.accuracy,
        }


@dataclass(frozen=True, slots=True)
class ChosenThreshold:
    threshold: float
    confusion: ConfusionMatrix


def _arrays(truth: Sequence[bool], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    if len(truth) != len(scores):
        raise ValueError(f"{len(truth)} labels but {len(scores)} scores")
    return np.asarray(truth, dtype=bool), np.asarray(scores, dtype=float)


def confusion_at(truth: Sequence[bool], scores: Sequence[float], threshold: float) -> ConfusionMatrix:
    positive, score = _arrays(truth, scores)
    flagged = score >= threshold
    return ConfusionMatrix(
        true_positives=int(np.sum(flagged & positive)),
        false_positives=int(np.sum(flagged & ~positive)),
        true_negatives=int(np.sum(~flagged & ~positive)),
        false_negatives=int(np.sum(~flagged & positive)),
    )


def _levels(score: np.ndarray) -> tuple[np.ndarray, int]:
    """Each score's rank among the distinct scores (ascending), and how many there are."""
    values, level = np.unique(score, return_inverse=True)
    return level.reshape(-1), int(values.size)


def _auc_by_level(level: np.ndarray, levels: int, positive: np.ndarray, weight: np.ndarray) -> float | None:
    """Weighted Mann-Whitney AUC: of all (positive, negative) weight pairs, the share where the
    positive scores higher, ties counting one half. None without weight in one class."""
    pos = np.bincount(level[positive], weights=weight[positive], minlength=levels)
    neg = np.bincount(level[~positive], weights=weight[~positive], minlength=levels)
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos == 0 or total_neg == 0:
        return None
    negatives_below = np.cumsum(neg) - neg
    return float(np.sum(pos * (negatives_below + 0.5 * neg)) / (total_pos * total_neg))


def roc_auc(truth: Sequence[bool], scores: Sequence[float]) -> float | None:
    """P(a random positive scores above a random negative), ties counting one half.

    None when one class is missing: the ranking is then undefined.
    """
    positive, score = _arrays(truth, scores)
    level, levels = _levels(score)
    return _auc_by_level(level, levels, positive, np.ones(score.size))


def roc_curve(truth: Sequence[bool], scores: Sequence[float]) -> list[tuple[float, float]]:
    """(false-positive rate, true-positive rate) points from the strictest threshold down."""
    points = [(0.0, 0.0)]
    for threshold in sorted(set(scores), reverse=True):
        confusion = confusion_at(truth, scores, threshold)
        points.append((confusion.false_positive_rate, confusion.recall))
    if points[-1] != (1.0, 1.0):
        points.append((1.0, 1.0))
    return points


def best_f1_threshold(truth: Sequence[bool], scores: Sequence[float]) -> ChosenThreshold | None:
    """The threshold with the highest F1 (the highest such threshold on ties: fewer flags)."""
    best: ChosenThreshold | None = None
    for threshold in sorted(set(scores), reverse=True):
        confusion = confusion_at(truth, scores, threshold)
        if best is None or confusion.f1 > best.confusion.f1:
            best = ChosenThreshold(threshold, confusion)
    return best


def threshold_for_fpr(
    truth: Sequence[bool], scores: Sequence[float], max_fpr: float = 0.05
) -> ChosenThreshold | None:
    """The lowest threshold (most recall) whose false-positive rate stays at or below `max_fpr`.

    Just above the highest score nothing is flagged (FPR 0), so there is always an answer
    unless there are no scores at all.
    """
    if not scores:
        return None
    flag_nothing = float(np.nextafter(max(scores), np.inf))
    chosen = ChosenThreshold(flag_nothing, confusion_at(truth, scores, flag_nothing))
    for threshold in sorted(set(scores), reverse=True):
        confusion = confusion_at(truth, scores, threshold)
        if confusion.false_positive_rate > max_fpr:
            break
        chosen = ChosenThreshold(threshold, confusion)
    return chosen


def cross_validated_at_fpr(
    truth: Sequence[bool], scores: Sequence[float], max_fpr: float = 0.05, *, folds: int = 5, seed: int = 0
) -> ConfusionMatrix | None:
    """The confusion of a threshold chosen at `max_fpr` on data it is then not judged on:
    stratified folds; for each, the threshold is chosen (threshold_for_fpr) on the other folds
    and applied to it; the held-out counts are summed. A threshold chosen and measured on the
    same rows flatters it; this is what it does on rows it has not seen. None: too few rows of
    a label to give every fold one."""
    positives = [i for i, flag in enumerate(truth) if flag]
    negatives = [i for i, flag in enumerate(truth) if not flag]
    if min(len(positives), len(negatives)) < folds:
        return None
    generator = np.random.default_rng(seed)
    fold_of = np.empty(len(truth), dtype=int)
    for members in (positives, negatives):
        order = generator.permutation(members)
        fold_of[order] = np.arange(len(order)) % folds
    counts = np.zeros(4, dtype=int)
    for fold in range(folds):
        train = [i for i in range(len(truth)) if fold_of[i] != fold]
        test = [i for i in range(len(truth)) if fold_of[i] == fold]
        chosen = threshold_for_fpr([truth[i] for i in train], [scores[i] for i in train], max_fpr)
        assert chosen is not None  # the training folds hold scores
        held_out = confusion_at([truth[i] for i in test], [scores[i] for i in test], chosen.threshold)
        counts += (held_out.true_positives, held_out.false_positives, held_out.true_negatives,
                   held_out.false_negatives)
    return ConfusionMatrix(*(int(count) for count in counts))


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% (z = 1.96) Wilson score interval of a rate; (0, 0) for no trials."""
    if trials == 0:
        return 0.0, 0.0
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    half = z * np.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / denominator
    # Exact at the ends: rounding would otherwise leave 1e-17 above a rate of 0 (or below 1).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return float(low), float(high)


BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
INTERVAL_METHODS = {
    "precision": "Wilson score interval",
    "recall": "Wilson score interval",
    "fpr": "Wilson score interval",
    "roc_auc": f"percentile bootstrap over prompts ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED})",
    "f1": f"percentile bootstrap over prompts ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED})",
}

INTERVALS_NOTE = (
    "95 % confidence intervals in parentheses: Wilson score intervals for precision, recall and FPR; "
    f"a percentile bootstrap over prompts ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}) for F1 "
    "and ROC AUC"
)

Interval = tuple[float, float]


def _rate_interval(successes: int, trials: int) -> Interval | None:
    return None if trials == 0 else wilson_interval(successes, trials)


def _percentile_interval(values: Sequence[float]) -> Interval | None:
    if not values:
        return None
    low, high = np.quantile(np.asarray(values), [0.025, 0.975])
    return float(low), float(high)


def bootstrap_intervals(
    truth: Sequence[bool], scores: Sequence[float], groups: Sequence[str], threshold: float,
    *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
) -> dict[str, Interval | None]:
    """95 % percentile-bootstrap intervals of ROC AUC and of F1 at `threshold`.

    The groups (prompts), not the rows, are resampled with replacement: answers to one prompt
    move together, so several answers to one prompt do not pass for independent evidence. A
    resample drawing no positive or no negative gives no AUC and is left out of its interval.
    With fewer than two groups there is nothing to resample: no intervals (None). Seeded: the
    same rows give the same interval.
    """
    positive, score = _arrays(truth, scores)
    if len(groups) != score.size:
        raise ValueError(f"{len(groups)} groups but {score.size} scores")
    index: dict[str, int] = {}
    group = np.asarray([index.setdefault(name, len(index)) for name in groups], dtype=int)
    if len(index) < 2:
        return {"roc_auc": None, "f1": None}
    level, levels = _levels(score)
    flagged = score >= threshold
    generator = np.random.default_rng(seed)
    aucs: list[float] = []
    f1s: list[float] = []
    for _ in range(resamples):
        drawn = np.bincount(generator.integers(0, len(index), len(index)), minlength=len(index))
        weight = drawn[group].astype(float)
        auc = _auc_by_level(level, levels, positive, weight)
        if auc is not None:
            aucs.append(auc)
        tp = weight[flagged & positive].sum()
        wrong = weight[flagged & ~positive].sum() + weight[~flagged & positive].sum()
        f1s.append(float(2 * tp / (2 * tp + wrong)) if tp else 0.0)
    return {"roc_auc": _percentile_interval(aucs), "f1": _percentile_interval(f1s)}


def intervals_95(
    truth: Sequence[bool], scores: Sequence[float], groups: Sequence[str], threshold: float
) -> dict[str, Interval | None]:
    """The 95 % confidence interval of each figure at `threshold` (INTERVAL_METHODS): Wilson
    score intervals for precision, recall and FPR, each row counted once; a seeded bootstrap over
    the groups (prompts) for ROC AUC and F1. None where a figure has nothing to count (precision
    with nothing flagged, recall without positives)."""
    confusion = confusion_at(truth, scores, threshold)
    tp, fp = confusion.true_positives, confusion.false_positives
    return {
        "precision": _rate_interval(tp, tp + fp),
        "recall": _rate_interval(tp, confusion.positives),
        "fpr": _rate_interval(fp, confusion.negatives),
        **bootstrap_intervals(truth, scores, groups, threshold),
    }
