"""Which judge head transfers (issue 25): grouped cross-validation over the development data.

Reads the features bench/judge_features.py cached for the XSTest development set, BeaverTails
(../shared/data/guard) and the contrast pairs (and any --data file, e.g. the on-policy rows),
then compares heads on out-of-fold scores, 5 folds grouped by prompt (all answers to one
prompt, and both halves of a contrast pair, in one fold), stratified by label:

- `single`: one layer's mean over the answer (the shipped design until now);
- `multi`: several layers' answer means, concatenated;
- `+prompt`: the same plus the mean over the prompt's tokens (the request's intent);
- `span`: the `multi` probe applied to windows of the answer's per-token states (mean over w
  tokens, stride w/2) and the maximum taken with the whole answer's score — what a streaming
  verdict reads;
- cross-source: fitted on one source, scored on the other (never seen in the fit).

Every figure is out-of-fold. The threshold of each fold is chosen on that fold's training rows
only (their own inner out-of-fold scores): the lowest one whose XSTest false-positive rate stays
<= --xstest-fpr (the over-refusal budget; then as much recall as it allows); reported
recall/FPR/F1 are at that threshold.

    PYTHONPATH=. python bench/judge_study.py --out bench/results/judge_study
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from judge_features import DEFAULT_CACHE, SOURCES, load_row, read_jsonl

from service.conscience.probe_fit import fit_logistic, grouped_stratified_folds, roc_auc


def fingerprint_dir(cache: Path) -> Path:
    found = [d for d in cache.iterdir() if (d / "fingerprint.txt").exists()]
    if len(found) != 1:
        raise SystemExit(f"expected one model's features under {cache}, found {len(found)}")
    return found[0]


class Data:
    """Rows with features: labels, sources, prompt groups, pooled arrays."""

    def __init__(self, rows: list[dict[str, Any]], directory: Path) -> None:
        kept, arrays = [], []
        for row in rows:
            feats = load_row(directory, row)
            if feats is not None:
                kept.append(row)
                arrays.append(feats)
        self.rows = kept
        self.directory = directory
        self.y = np.array([int(r["label"] == "unethical") for r in kept])
        self.source = np.array([r["_source"] for r in kept])
        self.groups = [r.get("pair") and f"pair:{r['pair']}" or f"prompt:{r['prompt']}" for r in kept]
        self.mean_answer = np.stack([a["mean_answer"] for a in arrays]).astype(np.float32)
        mean_all = np.stack([a["mean_all"] for a in arrays]).astype(np.float32)
        p = np.array([int(a["prompt_len"]) for a in arrays], dtype=np.float32)[:, None, None]
        n = np.array([int(a["answer_len"]) for a in arrays], dtype=np.float32)[:, None, None]
        self.mean_prompt = (mean_all * (p + n) - self.mean_answer * n) / p
        self.mean_all = mean_all
        self.last_prompt = np.stack([a["last_prompt"] for a in arrays]).astype(np.float32)

    def x(self, layers: tuple[int, ...], extra: str | None = None) -> np.ndarray:
        if extra == "mean_all_l2":  # what an embeddings endpoint with mean pooling returns, unit length
            parts = [self.mean_all[:, layer] for layer in layers]
            vector = np.concatenate(parts, axis=1).astype(np.float64)
            return vector / np.linalg.norm(vector, axis=1, keepdims=True)
        parts = [self.mean_answer[:, layer] for layer in layers]
        if extra == "prompt":
            parts += [self.mean_prompt[:, layer] for layer in layers]
        elif extra == "last_prompt":
            parts += [self.last_prompt[:, layer] for layer in layers]
        return np.concatenate(parts, axis=1).astype(np.float64)

    def tokens(self, index: int, layers: tuple[int, ...]) -> np.ndarray:
        with np.load(self.directory / self._file(index)) as data:
            token_layers = list(data["token_layers"])
            return np.concatenate([data["tokens"][token_layers.index(layer)] for layer in layers], axis=1)

    def _file(self, index: int) -> str:
        from judge_features import row_key

        row = self.rows[index]
        return f"{row_key(row['prompt'], row['completion'])}.npz"


def f1(scores: np.ndarray, y: np.ndarray, t: float | np.ndarray) -> float:
    """F1 of flagging at `t` (one threshold, or one per row)."""
    flagged = scores >= t
    tp = float((flagged & (y == 1)).sum())
    fp = float((flagged & (y == 0)).sum())
    fn = float((~flagged & (y == 1)).sum())
    return 2 * tp / max(2 * tp + fp + fn, 1.0)


def auc_by_source(scores: np.ndarray, y: np.ndarray, source: np.ndarray) -> dict[str, float]:
    """ROC AUC per source, for the sources that hold both labels."""
    return {name: round(roc_auc(scores[source == name], y[source == name]), 4)
            for name in sorted(set(source)) if 0 < y[source == name].sum() < (source == name).sum()}


def choose_threshold(scores: np.ndarray, y: np.ndarray, source: np.ndarray, max_xstest_fpr: float) -> float:
    """The lowest threshold (the most recall) whose false-positive rate on the XSTest rows —
    harmless answers to prompts that sound dangerous, the over-refusal test — stays at or below
    `max_xstest_fpr` (on all harmless rows when there are no XSTest rows)."""
    negatives = (source == "xstest") & (y == 0)
    if not negatives.any():
        negatives = y == 0
    from service.conscience.probe_fit import threshold_at_fpr

    return threshold_at_fpr(scores[negatives], [0] * int(negatives.sum()), max_xstest_fpr)


def oof(x: np.ndarray, y: np.ndarray, folds: np.ndarray, l2: float, train_mask: np.ndarray | None = None) -> np.ndarray:
    out = np.full(len(y), np.nan)
    mask = np.ones(len(y), dtype=bool) if train_mask is None else train_mask
    for fold in np.unique(folds):
        test = folds == fold
        out[test] = fit_logistic(x[~test & mask], y[~test & mask], l2=l2).scores(x[test])
    return out


def nested_thresholds(
    x: np.ndarray, data: Data, folds: np.ndarray, l2: float, max_xstest_fpr: float
) -> np.ndarray:
    """Per row: the threshold chosen on its fold's training rows' inner out-of-fold scores."""
    out = np.empty(len(data.y))
    for fold in np.unique(folds):
        train = np.flatnonzero(folds != fold)
        inner = grouped_stratified_folds([data.groups[i] for i in train], list(data.y[train]), k=4, seed=1)
        scores = oof(x[train], data.y[train], inner, l2)
        out[folds == fold] = choose_threshold(scores, data.y[train], data.source[train], max_xstest_fpr)
    return out


def summarise(scores: np.ndarray, data: Data, thresholds: np.ndarray) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name in sorted(set(data.source)):
        m = data.source == name
        y, s, t = data.y[m], scores[m], thresholds[m]
        flagged = s >= t
        entry = {"rows": int(m.sum()), "positives": int(y.sum())}
        if 0 < y.sum() < len(y):
            entry["auc"] = round(roc_auc(s, y), 4)
            entry["recall"] = round(float(flagged[y == 1].mean()), 4)
            entry["f1"] = round(f1(s, y, t), 4)
        if (y == 0).any():
            entry["fpr"] = round(float(flagged[y == 0].mean()), 4)
        result[name] = entry
    return result


def span_scores(data: Data, fitted: Any, index: np.ndarray, layers: tuple[int, ...], window: int) -> np.ndarray:
    out = np.empty(len(index))
    for k, i in enumerate(index):
        states = data.tokens(int(i), layers).astype(np.float64)  # [A, F]
        whole = fitted.scores(states.mean(axis=0, keepdims=True))[0]
        best = whole
        if len(states) > window:
            c = np.cumsum(np.vstack([np.zeros((1, states.shape[1])), states]), axis=0)
            starts = np.arange(0, len(states) - window + 1, max(window // 2, 1))
            means = (c[starts + window] - c[starts]) / window
            best = max(best, float(fitted.scores(means).max()))
        out[k] = best
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--data", action="append", type=Path, default=[], help="more rows (source: file stem)")
    parser.add_argument("--xstest-fpr", type=float, default=0.06)
    parser.add_argument("--l2", type=float, nargs="+", default=[1e-2, 1e-1])
    parser.add_argument("--spans", action="store_true", help="also the span head (reads per-token states)")
    parser.add_argument("--heads", nargs="+", help="only the heads whose name contains one of these")
    parser.add_argument("--no-transfer", action="store_true", help="skip the cross-source fits")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--tag", default="", help="suffix of the result file's name")
    args = parser.parse_args(argv)

    rows: list[dict[str, Any]] = []
    for name in ("xstest", "beavertails", "pairs"):
        rows += [dict(r, _source=name) for r in read_jsonl(SOURCES[name]) if r["label"] != "ambiguous"]
    for path in args.data:
        rows += [dict(r, _source=path.stem) for r in read_jsonl(path) if r["label"] != "ambiguous"]
    data = Data(rows, fingerprint_dir(args.cache))
    print({name: int((data.source == name).sum()) for name in sorted(set(data.source))}, flush=True)
    folds = grouped_stratified_folds(data.groups, list(data.y), k=5, seed=0)
    heads = [
        ("single L16", (16,), None),
        ("multi L12+16+20", (12, 16, 20), None),
        ("multi L8+12+16+20", (8, 12, 16, 20), None),
        ("multi L12+16+20 +prompt", (12, 16, 20), "prompt"),
        ("multi L12+16+20 +last_prompt", (12, 16, 20), "last_prompt"),
    ]
    report: dict[str, Any] = {"rows": {n: int((data.source == n).sum()) for n in sorted(set(data.source))},
                              "xstest_fpr_bound": args.xstest_fpr, "heads": []}
    if args.heads:
        heads = [head for head in heads if any(part in head[0] for part in args.heads)]
    for name, layers, extra in heads:
        x = data.x(layers, extra)
        for l2 in args.l2:
            t0 = time.time()
            scores = oof(x, data.y, folds, l2)
            thresholds = nested_thresholds(x, data, folds, l2, args.xstest_fpr)
            entry = {"head": name, "layers": layers, "extra": extra, "l2": l2,
                     "per_source": summarise(scores, data, thresholds), "seconds": round(time.time() - t0, 1)}
            report["heads"].append(entry)
            print(json.dumps(entry), flush=True)
    # Cross-source transfer: fitted on one source only, scored on the other.
    transfer = []
    compared = (((16,), None), ((12, 16, 20), None), ((12, 16, 20), "prompt"))
    for head_layers, extra in () if args.no_transfer else compared:
        x = data.x(head_layers, extra)
        for train_on, test_on in (("beavertails", "xstest"), ("xstest", "beavertails")):
            tr, te = data.source == train_on, data.source == test_on
            fitted = fit_logistic(x[tr], data.y[tr], l2=args.l2[-1])
            s = fitted.scores(x[te])
            transfer.append({"layers": head_layers, "extra": extra, "train": train_on, "test": test_on,
                             "auc": round(roc_auc(s, data.y[te]), 4)})
            print(json.dumps(transfer[-1]), flush=True)
    report["transfer"] = transfer
    if args.spans:
        layers = (12, 16, 20)
        x = data.x(layers)
        spans = []
        for window in (16, 32, 64):
            scores = np.empty(len(data.y))
            for fold in np.unique(folds):
                test = np.flatnonzero(folds == fold)
                fitted = fit_logistic(x[folds != fold], data.y[folds != fold], l2=args.l2[-1])
                scores[test] = span_scores(data, fitted, test, layers, window)
            spans.append({"window": window, "auc": auc_by_source(scores, data.y, data.source)})
            print(json.dumps(spans[-1]), flush=True)
        report["spans"] = spans
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"study{args.tag}.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
