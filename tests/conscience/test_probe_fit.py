"""Fitting latent probes with numpy: AUC, thresholds at a false-positive rate, folds, IRLS."""

from __future__ import annotations

import itertools

import pytest

np = pytest.importorskip("numpy")

from service.conscience.probe_fit import (  # noqa: E402
    figures,
    fit_logistic,
    grouped_stratified_folds,
    out_of_fold_scores,
    roc_auc,
    threshold_at_fpr,
    to_probe,
)


def test_auc_counts_pairs_and_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=40).astype(float)
    labels = rng.integers(0, 2, size=40)
    pos, neg = scores[labels == 1], scores[labels == 0]
    brute = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)])
    assert roc_auc(scores, labels) == pytest.approx(brute)


def test_threshold_keeps_the_false_positive_rate() -> None:
    rng = np.random.default_rng(1)
    labels = np.array([0] * 200 + [1] * 20)
    scores = np.concatenate([rng.random(200), rng.random(20) + 0.5])
    for target in (0.0, 0.05, 0.1):
        t = threshold_at_fpr(scores, labels, target)
        fpr = (scores[labels == 0] >= t).mean()
        assert fpr <= target
        # the lowest such threshold: one notch lower lets in one more negative
        assert (scores[labels == 0] >= np.nextafter(t, -np.inf)).mean() > target
    f = figures(scores, labels, 0.05)
    assert f["fpr"] <= 0.05 and 0 < f["recall"] <= 1


def test_folds_keep_groups_together_and_spread_positives() -> None:
    groups = [i // 3 for i in range(300)]
    labels = [1 if g % 10 == 0 else 0 for g in groups]
    folds = grouped_stratified_folds(groups, labels, k=5)
    for g in set(groups):
        assert len({folds[i] for i in range(300) if groups[i] == g}) == 1
    positives = [sum(labels[i] for i in range(300) if folds[i] == f) for f in range(5)]
    assert max(positives) - min(positives) <= 3


def test_irls_separates_and_matches_the_probe_artefact() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 12)) * rng.uniform(0.1, 5, size=12)
    y = (x[:, 0] / 5 - x[:, 3] + rng.normal(scale=0.5, size=300) > 1.0).astype(int)
    fitted = fit_logistic(x, y, l2=1e-3)
    assert roc_auc(fitted.scores(x), y) > 0.95
    folds = grouped_stratified_folds(list(range(300)), list(y), k=5)
    assert roc_auc(out_of_fold_scores(x, y, folds, l2=1e-2), y) > 0.9
    # the optimum: the gradient of the balanced, penalised objective vanishes
    z = (x - fitted.mean) / fitted.scale
    s = np.where(y == 1, 1 / y.sum(), 1 / (len(y) - y.sum()))
    s = s / s.sum()
    p = fitted.scores(x)
    assert np.abs(z.T @ (s * (p - y)) + 1e-3 * fitted.weights).max() < 1e-8
    probe = to_probe(
        fitted, model_fingerprint="f", layers=(0,), pooling="mean_answer", threshold=0.5, target_fpr=0.05,
        data_sha256="d",
    )
    for row, expected in zip(x[:10], fitted.scores(x[:10]), strict=True):
        assert probe.score(row.tolist()) == pytest.approx(float(expected), abs=1e-12)


@pytest.mark.parametrize("l2", [1e-3, 1e-2, 1e-1])
def test_many_features_reach_the_same_minimum_by_conjugate_gradients(
    l2: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe over several layers has thousands of features: its Newton steps are solved by
    conjugate gradients instead of the d x d Hessian, and must land on the same probe."""
    import service.conscience.probe_fit as probe_fit

    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 120)) * rng.uniform(0.1, 10.0, size=120)  # badly scaled, like hidden states
    y = (x[:, :10].sum(axis=1) / 10 + rng.normal(size=400) > 0).astype(float)
    direct = fit_logistic(x, y, l2=l2)
    monkeypatch.setattr(probe_fit, "DIRECT_MAX_FEATURES", 50)
    iterative = fit_logistic(x, y, l2=l2)
    assert np.abs(direct.scores(x) - iterative.scores(x)).max() < 1e-6
    assert np.abs(direct.weights - iterative.weights).max() < 1e-4
    monkeypatch.setattr(probe_fit, "DIRECT_MAX_FEATURES", 1024)
    assert fit_logistic(x, y, l2=l2).iterations == direct.iterations  # the direct path below the limit
