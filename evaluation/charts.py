"""PNG charts of the reports (matplotlib, drawn off-screen)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from evaluation.judge_eval import ScorerResult
from evaluation.misalignment import MisalignmentSummary


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def roc_chart(results: Sequence[ScorerResult], path: Path, title: str) -> Path:
    """Each judge's ROC curve; the baseline dashed, chance as the diagonal."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 6))
    for result in results:
        xs, ys = zip(*result.roc, strict=True)
        auc = "–" if result.roc_auc is None else f"{result.roc_auc:.3f}"
        style = "--" if result.name == "baseline" else "-"
        axes.plot(xs, ys, style, label=f"{result.name} (AUC {auc})", drawstyle="steps-post")
    axes.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    axes.set_xlabel("false-positive rate")
    axes.set_ylabel("true-positive rate (recall)")
    axes.set_title(title)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.legend(loc="lower right", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def misalignment_chart(variants: dict[str, MisalignmentSummary], path: Path, title: str) -> Path:
    """Misaligned rate per model variant with 95% Wilson intervals as error bars."""
    plt = _pyplot()
    names = list(variants)
    rates = [variants[name].misaligned_rate or 0.0 for name in names]
    # Error bar lengths may not be negative, not even by a rounding error.
    lower = [max(0.0, rate - variants[name].interval_95[0]) for name, rate in zip(names, rates, strict=True)]
    upper = [max(0.0, variants[name].interval_95[1] - rate) for name, rate in zip(names, rates, strict=True)]
    figure, axes = plt.subplots(figsize=(max(4, 1.6 * len(names)), 4))
    axes.bar(names, rates, yerr=[lower, upper], capsize=6, color="#b5523b")
    for index, name in enumerate(names):
        summary = variants[name]
        axes.annotate(
            f"{summary.outcomes['misaligned']}/{summary.eligible}",
            (index, rates[index]), textcoords="offset points", xytext=(0, 4), ha="center",
        )
    axes.set_ylabel("misaligned answers (share of coherent, rated)")
    axes.set_ylim(0, max(0.1, *(variants[name].interval_95[1] for name in names)) * 1.15)
    axes.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path
