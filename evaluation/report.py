"""Reports of the evaluations: a JSON file with everything, a Markdown summary for people.

The Markdown tables are what `conscience eval` prints and what the documentation (docs/) quotes; the JSON keeps
per-row scores and answers so a figure can be re-derived without running a model again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluation.judge_eval import ScorerResult
from evaluation.misalignment import MisalignmentSummary


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _with_interval(value: float | None, interval: Sequence[float] | None) -> str:
    """`0.750 (0.409–0.929)`: a figure and its 95 % interval, when it has one."""
    if value is None or interval is None:
        return _number(value)
    return f"{_number(value)} ({_number(interval[0])}–{_number(interval[1])})"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [_row(header), _row(["---"] * len(header))]
    lines.extend(_row(cells) for cells in rows)
    return "\n".join(lines)


def judge_table(results: Sequence[ScorerResult]) -> str:
    """One row per judge: metrics at the threshold it flags at, each with its 95 % interval in
    brackets where the result has them, then the ranking, the two thresholds a calibration would
    pick on these rows, and what a threshold chosen at FPR <= 5 % on four folds gives on the
    fifth (summed over the folds)."""
    rows = []
    for result in results:
        at = result.at_threshold
        best, strict = result.best_f1, result.fpr_at_most_5pct
        ci = result.intervals_95 or {}
        rows.append([
            result.name,
            _number(result.threshold, 2),
            _with_interval(float(at["precision"]), ci.get("precision")),
            _with_interval(float(at["recall"]), ci.get("recall")),
            _with_interval(float(at["f1"]), ci.get("f1")),
            _with_interval(float(at["fpr"]), ci.get("fpr")),
            f"{at['tp']}/{at['fp']}/{at['tn']}/{at['fn']}",
            _with_interval(result.roc_auc, ci.get("roc_auc")),
            f"{_number(best['threshold'])} (F1 {_number(best['f1'])})" if best else "–",
            f"{_number(strict['threshold'])} (recall {_number(strict['recall'])})" if strict else "–",
            f"{_number(held['recall'])} / {_number(held['fpr'])}" if (held := result.cross_validated_fpr_5pct) else "–",
            str(result.rows) + (f" ({result.failed} failed)" if result.failed else ""),
        ])
    header = [
        "judge", "threshold", "precision", "recall", "F1", "FPR", "TP/FP/TN/FN", "ROC AUC",
        "best-F1 threshold", "FPR ≤ 5% threshold", "held-out recall / FPR", "rows",
    ]
    return table(header, rows)


def repair_table(rows: Sequence[dict[str, Any]]) -> str:
    """Per framework: what happened to the flagged rows, then to the drafts."""
    header = [
        "framework", "flagged", "repaired (pass rate)", "of them reframed", "refused", "drafts", "drafts: refusals",
        "drafts: near-copies", "drafts: name the framework", "drafts: echo the instructions", "drafts: flagged again",
        "drafts: degenerate", "repairs: degenerate", "within budget", "tokens / repair", "seconds / repair",
        "flagged & truly unethical",
    ]
    return table(header, [
        [
            row["framework"],
            str(row["flagged"]),
            f"{row['repaired']} ({_number(row['pass_rate'])})",
            str(row["repaired_by_reframing"]),
            _number(row["refusal_rate"]),
            str(row["drafts"]),
            _number(row["draft_refusal_rate"]),
            _number(row["repeat_rate"]),
            _number(row["draft_mentions_framework_rate"]),
            _number(row["draft_echo_rate"]),
            _number(row["draft_flagged_rate"]),
            _number(row.get("draft_degenerate_rate")),
            _number(row.get("degenerate_answer_rate")),
            _number(row.get("within_budget_rate")),
            _number(row.get("tokens_per_repair")),
            _number(row.get("seconds_per_repair")),
            str(row["flagged_unethical"]),
        ]
        for row in rows
    ])


def misalignment_table(variants: dict[str, MisalignmentSummary]) -> str:
    header = [
        "model", "answers", "misaligned", "coherent & rated", "misaligned rate (95% CI)",
        "mean alignment", "refusals", "incoherent", "unrated",
    ]
    rows = []
    for name, summary in variants.items():
        low, high = summary.interval_95
        rate = summary.misaligned_rate
        rows.append([
            name,
            str(summary.answers),
            str(summary.outcomes["misaligned"]),
            str(summary.eligible),
            "–" if rate is None else f"{rate:.3f} ({low:.3f}–{high:.3f})",
            _number(summary.mean_alignment, 1),
            str(summary.outcomes["refusal"]),
            str(summary.outcomes["incoherent"]),
            str(summary.outcomes["unrated"]),
        ])
    return table(header, rows)


def per_question_table(summary: MisalignmentSummary) -> str:
    rows = [
        [
            question,
            str(stats["answers"]),
            str(stats["outcomes"]["misaligned"]),
            str(stats["eligible"]),
            _number(stats["mean_alignment"], 1),
            str(stats["outcomes"]["refusal"]),
        ]
        for question, stats in summary.per_question.items()
    ]
    return table(["question", "answers", "misaligned", "eligible", "mean alignment", "refusals"], rows)


def _points(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f}"


def adversarial_tables(results: Sequence[dict[str, Any]]) -> str:
    """One table per judge (style, and framework but for latent) from `adversarial.json`'s
    results: each framing's flag rate on the harmful rows, its drop from the plain rows in
    percentage points, the false-positive rate on the ethical rows, and whether the drop stays
    within 10 points."""
    header = [
        "framing", "kind", "harmful rows", "flag rate", "drop vs plain (points)", "ethical rows",
        "ethical FPR", "judge failures", "within 10 points",
    ]
    groups: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault((result["style"], result["framework"]), []).append(result)
    sections = []
    for (style, framework), members in groups.items():
        rows = [
            [
                row["framing"],
                row["kind"],
                str(row["harmful"]),
                _number(row["flag_rate"]),
                "–" if row["framing"] == "plain" else _points(row["drop_points"]),
                str(row["ethical"]),
                _number(row["fpr"]),
                str(row["harmful_failed"] + row["ethical_failed"]),
                "–" if row["within_10_points"] is None else ("yes" if row["within_10_points"] else "**no**"),
            ]
            for row in members
        ]
        name = style if framework is None else f"{style} · {framework}"
        threshold = members[0]["threshold"]
        sections.append(f"### {name} (threshold {_number(threshold)})\n\n{table(header, rows)}")
    return "\n\n".join(sections)
