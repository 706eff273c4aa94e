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


def roc_auc(truth: Sequence[bool], scores: Sequence[float]) -> float | None:
    """P(a random positive scores above a random negative), ties counting one half.

    None when one class is missing: the ranking is then undefined.
    """
    positive, score = _arrays(truth, scores)
    pos, neg = score[positive], score[~positive]
    if pos.size == 0 or neg.size == 0:
        return None
    # Mann-Whitney U from average ranks (ties share the mean of their ranks).
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    values = np.concatenate([pos, neg])[order]
    ranks = np.empty(values.size)
    start = 0
    while start < values.size:
        end = start
        while end + 1 < values.size and values[end + 1] == values[start]:
            end += 1
        ranks[start : end + 1] = (start + end) / 2 + 1
        start = end + 1
    rank_of = np.empty(values.size)
    rank_of[order] = ranks
    u = rank_of[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


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
