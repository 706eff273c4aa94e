"""Fitting latent probes (numpy only): class-balanced L2 logistic regression by Newton's method
(IRLS), ROC AUC, thresholds at a target false-positive rate, grouped stratified folds.

Used by bench/latent_probe.py and meant for `conscience calibrate --probe`; needs numpy (the
`eval` extra), never scikit-learn. Scoring a fitted probe needs none of this (probe.Probe.score).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.conscience.probe import Probe

DEFAULT_L2 = (1e-3, 1e-2, 1e-1)
# Up to this many features a Newton step solves the d x d Hessian directly; beyond it (several
# layers concatenated) by conjugate gradients, which costs O(n d) per product instead of O(n d^2).
DIRECT_MAX_FEATURES = 1024


@dataclass(frozen=True)
class Fitted:
    weights: np.ndarray  # over standardised features
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    iterations: int

    def logits(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.weights + self.bias

    def scores(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(x)))


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-6 * max(float(scale.max()), 1e-12), scale, 1.0)
    return mean, scale


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, l2: float, balanced: bool = True, max_iter: int = 50, tol: float = 1e-8
) -> Fitted:
    """Minimises  sum_i s_i * logloss_i / sum_i s_i + l2/2 * |w|^2  (bias not penalised), with
    s_i = n / (2 n_class(i)) when balanced, over features standardised on this data."""
    y = np.asarray(y, dtype=np.float64)
    if not ((y == 0) | (y == 1)).all() or y.min() == y.max():
        raise ValueError("labels must be 0/1 with both classes present")
    mean, scale = standardiser(x)
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    if balanced:
        positives = y.sum()
        s = np.where(y == 1, len(y) / (2 * positives), len(y) / (2 * (len(y) - positives)))
    else:
        s = np.ones_like(y)
    s = s / s.sum()
    penalty = np.full(z.shape[1], l2)
    penalty[-1] = 0.0
    if z.shape[1] > DIRECT_MAX_FEATURES:
        beta, iterations = _newton_cg(z, y, s, penalty, max_iter=max_iter, tol=tol)
        return Fitted(beta[:-1].copy(), float(beta[-1]), mean, scale, iterations)
    beta = np.zeros(z.shape[1])
    iterations = 0
    for iteration in range(1, max_iter + 1):
        iterations = iteration
        p = 1.0 / (1.0 + np.exp(-(z @ beta)))
        gradient = z.T @ (s * (p - y)) + penalty * beta
        hessian = (z * (s * p * (1 - p))[:, None]).T @ z + np.diag(penalty)
        hessian[-1, -1] += 1e-10
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if float(np.abs(step).max()) < tol:
            break
    return Fitted(beta[:-1].copy(), float(beta[-1]), mean, scale, iterations)


def _objective(z: np.ndarray, y: np.ndarray, s: np.ndarray, penalty: np.ndarray, beta: np.ndarray) -> float:
    margin = z @ beta
    loss = np.logaddexp(0.0, margin) - y * margin
    return float(s @ loss + 0.5 * penalty @ (beta * beta))


def _newton_cg(
    z: np.ndarray, y: np.ndarray, s: np.ndarray, penalty: np.ndarray, *, max_iter: int, tol: float
) -> tuple[np.ndarray, int]:
    """The same minimum as the direct Newton steps, for many features: each step solved by
    conjugate gradients on Hessian-vector products (2 n d flops each, never the d x d Hessian),
    preconditioned by the Hessian's diagonal, with a backtracking line search."""
    beta = np.zeros(z.shape[1])
    value = _objective(z, y, s, penalty, beta)
    iterations = 0
    for iteration in range(1, max_iter + 1):
        iterations = iteration
        p = 1.0 / (1.0 + np.exp(-(z @ beta)))
        gradient = z.T @ (s * (p - y)) + penalty * beta
        if float(np.abs(gradient).max()) < tol:
            break
        w = s * p * (1 - p)
        diagonal = (z * z).T @ w + penalty + 1e-12

        def hessian_times(v: np.ndarray, w: np.ndarray = w) -> np.ndarray:
            return z.T @ (w * (z @ v)) + penalty * v

        # Preconditioned CG for H step = gradient, to a relative residual that tightens near the minimum.
        step = np.zeros_like(beta)
        residual = gradient.copy()
        preconditioned = residual / diagonal
        direction = preconditioned.copy()
        rho = residual @ preconditioned
        target = min(0.1, float(np.sqrt(np.linalg.norm(gradient)))) * np.linalg.norm(gradient)
        for _ in range(500):
            hd = hessian_times(direction)
            alpha = rho / (direction @ hd)
            step += alpha * direction
            residual -= alpha * hd
            if np.linalg.norm(residual) <= target:
                break
            preconditioned = residual / diagonal
            rho, previous = residual @ preconditioned, rho
            direction = preconditioned + (rho / previous) * direction
        size = 1.0
        while size > 1e-6:
            candidate = beta - size * step
            candidate_value = _objective(z, y, s, penalty, candidate)
            if candidate_value <= value:
                break
            size /= 2
        beta, value = candidate, candidate_value
        if float(np.abs(size * step).max()) < tol:
            break
    return beta, iterations


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos = int((labels == 1).sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def threshold_at_fpr(scores: Sequence[float], labels: Sequence[int], target_fpr: float) -> float:
    """The lowest threshold t (flagged: score >= t) whose false-positive rate is <= target_fpr."""
    scores = np.asarray(scores, dtype=np.float64)
    negatives = np.sort(scores[np.asarray(labels) == 0])[::-1]
    allowed = int(np.floor(target_fpr * len(negatives) + 1e-9))
    if allowed >= len(negatives):
        return float(negatives[-1])
    return float(np.nextafter(negatives[allowed], np.inf))


def rates(scores: Sequence[float], labels: Sequence[int], threshold: float) -> dict[str, float]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    flagged = scores >= threshold
    return {
        "recall": float(flagged[labels == 1].mean()) if (labels == 1).any() else float("nan"),
        "fpr": float(flagged[labels == 0].mean()) if (labels == 0).any() else float("nan"),
    }


def figures(scores: Sequence[float], labels: Sequence[int], target_fpr: float) -> dict[str, float]:
    threshold = threshold_at_fpr(scores, labels, target_fpr)
    return {"auc": roc_auc(scores, labels), "threshold": threshold, **rates(scores, labels, threshold)}


def grouped_stratified_folds(
    groups: Sequence[Hashable], labels: Sequence[int], k: int = 5, seed: int = 0
) -> np.ndarray:
    """Fold number per row: every group in one fold; positives and rows spread evenly."""
    members: dict[Hashable, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    keys = list(members)
    random.Random(seed).shuffle(keys)
    keys.sort(key=lambda g: -sum(labels[i] for i in members[g]))  # stable: shuffled within ties
    positives = [0] * k
    sizes = [0] * k
    fold_of = np.empty(len(labels), dtype=int)
    for group in keys:
        rows = members[group]
        pos = sum(labels[i] for i in rows)
        fold = min(range(k), key=lambda f: (positives[f] if pos else 0, sizes[f], f))
        positives[fold] += pos
        sizes[fold] += len(rows)
        fold_of[rows] = fold
    return fold_of


def out_of_fold_scores(
    x: np.ndarray, y: np.ndarray, folds: np.ndarray, *, l2: float, train_mask: np.ndarray | None = None
) -> np.ndarray:
    """Scores of every row from the model fitted on the other folds; `train_mask` limits which
    rows are ever trained on (all rows are still scored)."""
    train_mask = np.ones(len(y), dtype=bool) if train_mask is None else train_mask
    out = np.empty(len(y))
    for fold in np.unique(folds):
        test = folds == fold
        train = ~test & train_mask
        out[test] = fit_logistic(x[train], y[train], l2=l2).scores(x[test])
    return out


def to_probe(fitted: Fitted, **fields: Any) -> Probe:
    return Probe(
        weights=tuple(float(v) for v in fitted.weights),
        bias=float(fitted.bias),
        feature_mean=tuple(float(v) for v in fitted.mean),
        feature_scale=tuple(float(v) for v in fitted.scale),
        **fields,
    )
