"""`eval judge`: score labelled rows with each judge and measure how well the scores flag.

Scorers run one after another (rows in file order), so a server's prompt cache keeps one
scorer's fixed instructions warm; inside a scorer, `concurrency` rows are in flight at once.
Rows whose judge call failed are counted and left out of the metrics. Each figure at the
threshold comes with its 95 % interval (evaluation/metrics.py `intervals_95`: Wilson for
precision, recall and FPR; a seeded bootstrap over prompts for F1 and ROC AUC).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from evaluation.datasets import LabelledRow
from evaluation.metrics import (
    best_f1_threshold,
    confusion_at,
    cross_validated_at_fpr,
    intervals_95,
    roc_auc,
    roc_curve,
    threshold_for_fpr,
)
from evaluation.score_log import ScoreEntry, ScoreLog
from evaluation.scorers import AnswerScorer
from service.conscience.judge import JudgeFailed
from service.core.backend import BackendError

MAX_FPR = 0.05

Progress = Callable[[str, int, int], None]  # (scorer name, rows done, rows in all)


@dataclass(frozen=True)
class ScorerResult:
    """One scorer's metrics on the scored (non-ambiguous) rows."""

    name: str
    threshold: float
    rows: int
    failed: int
    at_threshold: dict[str, float | int]
    roc_auc: float | None
    best_f1: dict[str, Any] | None
    fpr_at_most_5pct: dict[str, Any] | None
    roc: list[tuple[float, float]]
    scores: dict[str, float]  # row id -> score, scored rows only
    # A threshold chosen at FPR <= 5 % on four folds, measured on the fifth (evaluation/metrics.py).
    cross_validated_fpr_5pct: dict[str, Any] | None = None
    # 95 % intervals of precision, recall, FPR (Wilson), F1 and ROC AUC (bootstrap over prompts) at
    # `threshold`: [low, high], None where a figure has nothing to count (metrics.intervals_95).
    intervals_95: dict[str, list[float] | None] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "threshold": self.threshold,
            "rows": self.rows,
            "failed": self.failed,
            "at_threshold": self.at_threshold,
            "roc_auc": self.roc_auc,
            "best_f1": self.best_f1,
            "fpr_at_most_5pct": self.fpr_at_most_5pct,
            "cross_validated_fpr_5pct": self.cross_validated_fpr_5pct,
            "intervals_95": self.intervals_95,
            "roc": [list(point) for point in self.roc],
            "scores": self.scores,
        }


async def score_rows(
    scorer: AnswerScorer,
    rows: Sequence[LabelledRow],
    *,
    log: ScoreLog | None = None,
    concurrency: int = 1,
    progress: Progress | None = None,
) -> dict[str, ScoreEntry]:
    """Each row's score (or error) by row id, reusing finished rows from `log` (kept per data
    file: the row's `source`) and adding new ones. The rows are one file's: their ids unique."""
    fingerprint = scorer.fingerprint
    results: dict[str, ScoreEntry] = {}
    pending = []
    for row in rows:
        cached = log.get(fingerprint, row.id, source=row.source) if log is not None else None
        if cached is not None:
            results[row.id] = cached
        else:
            pending.append(row)
    gate = asyncio.Semaphore(concurrency)

    async def one(row: LabelledRow) -> None:
        async with gate:
            try:
                entry = ScoreEntry(await scorer.score(row.conversation, row.completion))
            except (BackendError, JudgeFailed) as exc:
                entry = ScoreEntry(None, str(exc))
        results[row.id] = entry
        if log is not None:
            log.add(fingerprint, row.id, entry, scorer=scorer.name, source=row.source)
        if progress is not None:
            progress(scorer.name, len(results), len(rows))

    await asyncio.gather(*(one(row) for row in pending))
    return results


def _chosen(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    return {"threshold": choice.threshold, **choice.confusion.as_dict()}


def summarise(
    name: str, rows: Sequence[LabelledRow], entries: dict[str, ScoreEntry], threshold: float
) -> ScorerResult:
    scored = [row for row in rows if row.is_scored]
    usable = [row for row in scored if entries[row.id].score is not None]
    truth = [row.should_flag for row in usable]
    scores = [float(entries[row.id].score) for row in usable]  # type: ignore[arg-type]
    held_out = cross_validated_at_fpr(truth, scores, MAX_FPR)
    intervals = intervals_95(truth, scores, [row.prompt for row in usable], threshold)
    return ScorerResult(
        name=name,
        threshold=threshold,
        rows=len(usable),
        failed=len(scored) - len(usable),
        at_threshold=confusion_at(truth, scores, threshold).as_dict(),
        roc_auc=roc_auc(truth, scores),
        best_f1=_chosen(best_f1_threshold(truth, scores)),
        fpr_at_most_5pct=_chosen(threshold_for_fpr(truth, scores, MAX_FPR)),
        roc=roc_curve(truth, scores),
        scores={row.id: score for row, score in zip(usable, scores, strict=True)},
        cross_validated_fpr_5pct=None if held_out is None else held_out.as_dict(),
        intervals_95={name: None if bounds is None else list(bounds) for name, bounds in intervals.items()},
    )


async def evaluate_judges(
    scorers: Sequence[AnswerScorer],
    rows: Sequence[LabelledRow],
    *,
    log: ScoreLog | None = None,
    concurrency: int = 1,
    progress: Progress | None = None,
) -> list[ScorerResult]:
    """Every scorer's result on the scored rows (ambiguous rows are not even sent), at the
    threshold it flags at."""
    scored = [row for row in rows if row.is_scored]
    results = []
    for scorer in scorers:
        entries = await score_rows(
            scorer, scored, log=log, concurrency=concurrency, progress=progress
        )
        results.append(summarise(scorer.name, scored, entries, scorer.threshold))
    return results
