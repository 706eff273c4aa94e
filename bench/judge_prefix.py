"""Teaching the probe what a harmless answer's opening looks like (issue 25, the streaming verdict).

A streamed answer is judged as it grows (each window reads the answer so far), so the probe
scores short openings too — and a probe fitted on whole answers only flags harmless openings
far more often than harmless answers (bench/results/judge_streaming: 13 % of XSTest's harmless
answers at some opening against ~5 % whole). The fix measured here: add, for every harmless
training answer, the means of its first 16, 32, 64 and 128 tokens as more harmless rows (an
opening of a harmless answer is harmless; an opening of a harmful one may not be harmful yet,
so those are not added).

Out-of-fold comparison (bench/judge_study.py's folds), whole-answer figures and streaming
figures (the answer so far scored every --every tokens):

    PYTHONPATH=. python bench/judge_prefix.py --out bench/results/judge_prefix
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from judge_features import DEFAULT_CACHE, SOURCES, read_jsonl  # noqa: E402
from judge_study import Data, choose_threshold, fingerprint_dir  # noqa: E402

from service.conscience.probe_fit import fit_logistic, grouped_stratified_folds, roc_auc  # noqa: E402

ONPOLICY = ROOT / "bench/results/judge_onpolicy/rows.jsonl"
LAYERS = (12, 16, 20)
OPENINGS = (16, 32, 64, 128)
L2 = 0.1


def prefix_means(states: np.ndarray, lengths: tuple[int, ...]) -> np.ndarray:
    c = np.cumsum(states.astype(np.float64), axis=0)
    return np.stack([c[k - 1] / k for k in lengths if k < len(states)]) if len(states) > min(lengths) else np.zeros(
        (0, states.shape[1])
    )


def streaming(scores_at: list[tuple[np.ndarray, np.ndarray]], y: np.ndarray, t: np.ndarray,
              first: int) -> dict[str, float]:
    flagged_any, first_window, shares = [], [], []
    for (positions, scores), label, threshold in zip(scores_at, y, t, strict=True):
        crossed = np.flatnonzero(scores >= threshold)
        if label == 1:
            flagged_any.append(len(crossed) > 0)
            if len(crossed):
                shares.append(positions[crossed[0]] / positions[-1])
        else:
            first_window.append(bool((scores[positions <= max(first, positions[0])] >= threshold).any()))
            flagged_any.append(len(crossed) > 0)
    y = np.asarray(y)
    fa = np.asarray(flagged_any)
    return {"recall": round(float(fa[y == 1].mean()), 4), "fpr_any_window": round(float(fa[y == 0].mean()), 4),
            "fpr_first_window": round(float(np.mean(first_window)), 4),
            "share_read_median": round(float(np.median(shares)), 4) if shares else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--every", type=int, nargs="+", default=[96, 16])
    parser.add_argument("--xstest-fpr", type=float, default=0.06)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for name in ("xstest", "beavertails", "pairs"):
        rows += [dict(r, _source=name) for r in read_jsonl(SOURCES[name]) if r["label"] != "ambiguous"]
    rows += [dict(r, _source="onpolicy") for r in read_jsonl(ONPOLICY) if r["label"] != "ambiguous"]
    data = Data(rows, fingerprint_dir(args.cache))
    x = data.x(LAYERS)
    tokens = [data.tokens(i, LAYERS) for i in range(len(data.rows))]
    print("token states loaded", flush=True)
    folds = grouped_stratified_folds(data.groups, list(data.y), k=5, seed=0)
    report: dict[str, Any] = {"openings": OPENINGS, "l2": L2, "xstest_fpr_bound": args.xstest_fpr, "variants": {}}
    for variant in ("whole answers", "whole answers + harmless openings"):
        whole = np.empty(len(data.y))
        thresholds = np.empty(len(data.y))
        per_every: dict[int, list[Any]] = {e: [None] * len(data.y) for e in args.every}
        for fold in range(5):
            train, test = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
            xt, yt = x[train], data.y[train]
            if variant.endswith("openings"):
                extra = [prefix_means(tokens[i], OPENINGS) for i in train if data.y[i] == 0]
                extra = np.vstack([e for e in extra if len(e)])
                xt, yt = np.vstack([xt, extra]), np.concatenate([yt, np.zeros(len(extra), dtype=int)])
            fitted = fit_logistic(xt, yt, l2=L2)
            # Threshold on the training rows' whole answers (in-sample here: the nested choice
            # costs 4x; the study's nested figures are within a point of this on the whole answers).
            t = choose_threshold(fitted.scores(x[train]), data.y[train], data.source[train], args.xstest_fpr)
            whole[test] = fitted.scores(x[test])
            thresholds[test] = t
            for i in test:
                states = tokens[i].astype(np.float64)
                c = np.cumsum(states, axis=0)
                for every in args.every:
                    positions = np.unique(np.append(np.arange(every, len(states) + 1, every), len(states)))
                    per_every[every][i] = (positions, fitted.scores(c[positions - 1] / positions[:, None]))
        entry: dict[str, Any] = {}
        for source in sorted(set(data.source)):
            m = data.source == source
            y, s, t = data.y[m], whole[m], thresholds[m]
            fl = s >= t
            e: dict[str, Any] = {"auc": round(roc_auc(s, y), 4), "recall": round(float(fl[y == 1].mean()), 4),
                                 "fpr": round(float(fl[y == 0].mean()), 4)}
            for every in args.every:
                e[f"streaming_every_{every}"] = streaming(
                    [per_every[every][i] for i in np.flatnonzero(m)], y, t, first=96)
            entry[source] = e
            print(variant, source, json.dumps(e), flush=True)
        report["variants"][variant] = entry
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "prefix.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
