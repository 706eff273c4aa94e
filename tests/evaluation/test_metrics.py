"""The metric functions against confusion matrices and rankings worked out by hand."""

from __future__ import annotations

import math

import pytest

from evaluation.metrics import (
    ConfusionMatrix,
    best_f1_threshold,
    confusion_at,
    roc_auc,
    roc_curve,
    threshold_for_fpr,
    wilson_interval,
)

# Four positives, six negatives. At 0.5: flagged are 0.9 (+), 0.8 (+), 0.7 (-), 0.6 (+);
# TP 3, FP 1, FN 1 (0.3 +), TN 5.
TRUTH = [True, True, False, True, False, False, True, False, False, False]
SCORES = [0.9, 0.8, 0.7, 0.6, 0.4, 0.35, 0.3, 0.2, 0.1, 0.05]


def test_confusion_matrix_at_a_threshold() -> None:
    confusion = confusion_at(TRUTH, SCORES, 0.5)
    assert confusion == ConfusionMatrix(
        true_positives=3, false_positives=1, true_negatives=5, false_negatives=1
    )
    assert confusion.precision == pytest.approx(3 / 4)
    assert confusion.recall == pytest.approx(3 / 4)
    assert confusion.f1 == pytest.approx(3 / 4)
    assert confusion.false_positive_rate == pytest.approx(1 / 6)
    assert confusion.accuracy == pytest.approx(8 / 10)


def test_a_score_equal_to_the_threshold_is_flagged() -> None:
    assert confusion_at([True, False], [0.5, 0.49], 0.5).true_positives == 1


def test_empty_denominators_give_zero_not_an_error() -> None:
    nothing_flagged = confusion_at([False, False], [0.1, 0.2], 0.9)
    assert (nothing_flagged.precision, nothing_flagged.recall, nothing_flagged.f1) == (0.0, 0.0, 0.0)


def test_roc_auc_counts_ordered_pairs() -> None:
    # Pairs (positive, negative) where the positive scores higher: 0.9 and 0.8 beat all six
    # negatives (12), 0.6 beats five (not 0.7), 0.3 beats three (0.2, 0.1, 0.05): 20 of 24.
    assert roc_auc(TRUTH, SCORES) == pytest.approx(20 / 24)


def test_roc_auc_ties_count_one_half() -> None:
    assert roc_auc([True, False], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([True, True, False], [0.7, 0.5, 0.5]) == pytest.approx((1 + 0.5) / 2)


def test_roc_auc_of_a_perfect_inverted_and_undefined_ranking() -> None:
    assert roc_auc([True, False], [0.9, 0.1]) == 1.0
    assert roc_auc([True, False], [0.1, 0.9]) == 0.0
    assert roc_auc([False, False], [0.1, 0.9]) is None


def test_roc_curve_runs_from_origin_to_corner() -> None:
    curve = roc_curve(TRUTH, SCORES)
    assert curve[0] == (0.0, 0.0) and curve[-1] == (1.0, 1.0)
    assert curve[1] == (0.0, 0.25)  # threshold 0.9: one positive, no negative
    assert all(b[0] >= a[0] and b[1] >= a[1] for a, b in zip(curve, curve[1:], strict=False))


def test_best_f1_threshold() -> None:
    # Candidates: at 0.6 TP 3 FP 1 FN 1 -> F1 0.75; at 0.3 TP 4 FP 3 -> P 4/7, R 1 -> F1 8/11.
    chosen = best_f1_threshold(TRUTH, SCORES)
    assert chosen is not None
    assert chosen.threshold == 0.6
    assert chosen.confusion.f1 == pytest.approx(0.75)


def test_threshold_for_fpr_keeps_most_recall_within_the_bound() -> None:
    # FPR <= 1/6 allows one false positive: the lowest such threshold is 0.6 (0.4 adds a second).
    chosen = threshold_for_fpr(TRUTH, SCORES, max_fpr=1 / 6)
    assert chosen is not None
    assert chosen.threshold == 0.6
    assert chosen.confusion.false_positives == 1
    # With no false positive allowed, 0.8 is the lowest threshold below the negative at 0.7.
    strict = threshold_for_fpr(TRUTH, SCORES, max_fpr=0.0)
    assert strict is not None and strict.threshold == 0.8


def test_threshold_for_fpr_flags_nothing_when_the_top_score_is_negative() -> None:
    chosen = threshold_for_fpr([False, True], [0.9, 0.1], max_fpr=0.0)
    assert chosen is not None
    assert chosen.threshold > 0.9
    assert chosen.confusion.true_positives + chosen.confusion.false_positives == 0


def test_wilson_interval() -> None:
    # 5 of 10 at z=1.96: centre 0.5, half-width 1.96*sqrt(0.025+0.0096)/1.384.
    low, high = wilson_interval(5, 10)
    half = 1.96 * math.sqrt(0.25 / 10 + 1.96**2 / 400) / (1 + 1.96**2 / 10)
    assert (low, high) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))
    assert wilson_interval(0, 0) == (0.0, 0.0)
    assert wilson_interval(0, 20)[0] == 0.0
    # Exactly 0 and 1 at the ends, where rounding once left 2.8e-17 (a negative error bar).
    assert all(wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0 for n in range(1, 60))


def test_a_cross_validated_threshold_is_measured_on_rows_it_was_not_chosen_on() -> None:
    from evaluation.metrics import cross_validated_at_fpr

    truth = [True] * 10 + [False] * 30
    separated = cross_validated_at_fpr(truth, [0.9] * 10 + [0.1] * 30, 0.05)
    assert separated is not None and (separated.recall, separated.false_positive_rate) == (1.0, 0.0)
    assert separated.positives + separated.negatives == 40  # every row held out once
    # One positive far above the rest: in-sample it sets the threshold only on the folds that
    # hold it, so on its own fold (held out) the threshold is the others' and still flags it,
    # while every other fold's threshold stays low enough for the 0.5-scored positives.
    ranked = cross_validated_at_fpr(truth, [0.99] + [0.5] * 9 + [0.1] * 30, 0.05)
    assert ranked is not None and ranked.recall == 1.0
    # Negatives scoring like positives: each fold's threshold sits above them, and above the
    # positives they tie with, so the held-out rows show what that costs.
    tied = cross_validated_at_fpr(truth, [0.9] * 10 + [0.9] * 6 + [0.1] * 24, 0.05)
    assert tied is not None and tied.recall == 0.0 and tied.false_positive_rate == 0.0
    assert cross_validated_at_fpr([True] * 4 + [False] * 30, [0.5] * 34) is None  # < 5 positives


def test_rate_intervals_are_wilsons_of_the_counts_at_the_threshold() -> None:
    from evaluation.metrics import intervals_95

    intervals = intervals_95(TRUTH, SCORES, [f"p{i}" for i in range(len(TRUTH))], 0.5)
    # TP 3, FP 1, TN 5, FN 1 (above).
    assert intervals["precision"] == wilson_interval(3, 4)
    assert intervals["recall"] == wilson_interval(3, 4)
    assert intervals["fpr"] == wilson_interval(1, 6)


def test_bootstrap_intervals_hold_the_figure_and_are_seeded() -> None:
    from evaluation.metrics import bootstrap_intervals

    groups = [f"p{i}" for i in range(len(TRUTH))]
    first = bootstrap_intervals(TRUTH, SCORES, groups, 0.5)
    auc_low, auc_high = first["roc_auc"]
    f1_low, f1_high = first["f1"]
    assert 0.0 <= auc_low < 20 / 24 < auc_high <= 1.0
    assert 0.0 <= f1_low < 0.75 < f1_high <= 1.0
    # The same rows, ten times over under their own prompts: narrower, and a function of the seed.
    truth, scores = TRUTH * 10, [score + 0.001 * copy for copy in range(10) for score in SCORES]
    many = [f"p{i}" for i in range(len(truth))]
    larger = bootstrap_intervals(truth, scores, many, 0.5)
    assert larger == bootstrap_intervals(truth, scores, many, 0.5)
    assert larger != bootstrap_intervals(truth, scores, many, 0.5, seed=1)
    assert larger["roc_auc"][1] - larger["roc_auc"][0] < auc_high - auc_low
    # A perfect ranking stays perfect in every resample that holds both classes.
    perfect = bootstrap_intervals([True] * 5 + [False] * 5, [0.9] * 5 + [0.1] * 5, groups, 0.5)
    assert perfect == {"roc_auc": (1.0, 1.0), "f1": (1.0, 1.0)}


def test_the_bootstrap_resamples_prompts_not_rows() -> None:
    from evaluation.metrics import bootstrap_intervals

    # Every answer twice under its prompt: resampling prompts, the copies move together, and the
    # intervals are those of the single answers; counted as independent rows, they would narrow.
    groups = [f"p{i}" for i in range(len(TRUTH))]
    single = bootstrap_intervals(TRUTH, SCORES, groups, 0.5)
    twice = bootstrap_intervals(
        [t for t in TRUTH for _ in (0, 1)], [s for s in SCORES for _ in (0, 1)], [g for g in groups for _ in (0, 1)],
        0.5,
    )
    assert twice["roc_auc"] == pytest.approx(single["roc_auc"])
    assert twice["f1"] == pytest.approx(single["f1"])
    as_rows = bootstrap_intervals(
        [t for t in TRUTH for _ in (0, 1)], [s for s in SCORES for _ in (0, 1)], [f"r{i}" for i in range(20)], 0.5,
    )
    assert as_rows["roc_auc"][1] - as_rows["roc_auc"][0] < single["roc_auc"][1] - single["roc_auc"][0]


def test_intervals_are_none_where_nothing_is_counted() -> None:
    from evaluation.metrics import intervals_95

    one_prompt = intervals_95(TRUTH, SCORES, ["same"] * len(TRUTH), 0.5)
    assert one_prompt["roc_auc"] is None and one_prompt["f1"] is None  # nothing to resample
    nothing_flagged = intervals_95(TRUTH, SCORES, [str(i) for i in range(10)], 0.95)
    assert nothing_flagged["precision"] is None and nothing_flagged["recall"] == wilson_interval(0, 4)
    negatives_only = intervals_95([False] * 4, [0.1, 0.2, 0.6, 0.7], ["a", "b", "c", "d"], 0.5)
    assert negatives_only["recall"] is None and negatives_only["roc_auc"] is None
    assert negatives_only["fpr"] == wilson_interval(2, 4)
