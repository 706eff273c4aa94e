"""The judge study's own arithmetic (bench/judge_study.py, bench/judge_streaming.py): the threshold
rule, per-source figures and the streaming verdict's prefix scores, on small arrays."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(autouse=True)
def bench_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("judge_study", "judge_streaming", "judge_features"):
        sys.modules.pop(name, None)


def test_the_threshold_is_the_lowest_within_the_xstest_false_positive_budget() -> None:
    from judge_study import choose_threshold

    source = np.array(["xstest"] * 10 + ["beavertails"] * 4)
    y = np.array([0] * 8 + [1, 1] + [0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.98, 0.05, 0.06])
    t = choose_threshold(scores, y, source, max_xstest_fpr=0.25)  # 2 of 8 harmless XSTest rows may pass it
    flagged = scores[(source == "xstest") & (y == 0)] >= t
    assert flagged.sum() == 2 and t > 0.6  # the lowest such: 0.7 and 0.8 flagged, 0.6 not
    # BeaverTails rows do not move it: the over-refusal budget is XSTest's.
    xs = source == "xstest"
    assert choose_threshold(scores[xs], y[xs], source[xs], max_xstest_fpr=0.25) == t
    # Without XSTest rows, every harmless row is the budget's.
    assert choose_threshold(scores, y, np.full(len(y), "other"), max_xstest_fpr=0.25) != t


def test_prefix_scores_are_the_probe_on_the_mean_so_far() -> None:
    from judge_streaming import prefix_scores

    from service.conscience.probe import Probe

    rng = np.random.default_rng(0)
    states = rng.normal(size=(37, 6))
    probe = Probe(
        model_fingerprint="f" * 64, layers=(1, 2), pooling="mean_answer",
        weights=tuple(rng.normal(size=6)), bias=0.2, feature_mean=tuple(rng.normal(size=6)),
        feature_scale=tuple(rng.uniform(0.5, 2, size=6)), threshold=0.5, target_fpr=0.05, data_sha256="d",
    )
    positions, scores = prefix_scores(probe, states, every=16)
    assert positions.tolist() == [16, 32, 37]  # every 16 tokens, and the whole answer
    for k, score in zip(positions, scores, strict=True):
        assert score == pytest.approx(probe.score(states[:k].mean(axis=0).tolist()), abs=1e-9)
