"""Signals that complement (issue 25): the latent probe, the judge adapter and the Yes/No words.

On the held-out rows bench/judge_adapter.py scored (a stratified sample of fold 0 of the
study's grouped folds), beside the probe fitted on the other folds (all their rows, and only the
rows the adapter trained on), each alone and combined:

- `mean`: the average of two signals' probabilities on every row (both always run);
- `cascade`: the probe first; only rows whose probe score lies in the uncertain band around its
  threshold (the middle --band share of the training rows' scores) get the second signal, and
  there the average decides. Its cost is the share of rows that reach the second signal.

Thresholds: each combination's own, chosen on the probe's training folds where it can be (the
probe alone) and otherwise reported as ROC AUC only (ranking needs no threshold).

    PYTHONPATH=. python bench/judge_cascade.py --out bench/results/judge_cascade
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from judge_adapter import rows_and_folds  # noqa: E402
from judge_features import DEFAULT_CACHE, read_jsonl  # noqa: E402
from judge_study import Data, auc_by_source, fingerprint_dir  # noqa: E402

from service.conscience.probe_fit import fit_logistic  # noqa: E402

LAYERS = (12, 16, 20)
L2 = 0.1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--adapter", type=Path, default=ROOT / "bench/results/judge_adapter")
    parser.add_argument("--band", type=float, default=0.3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    adapter = {r["id"]: r for r in read_jsonl(args.adapter / "scores.jsonl")}
    meta = json.loads((args.adapter / "result.json").read_text())
    rows, folds = rows_and_folds()
    data = Data(rows, fingerprint_dir(args.cache))
    fold_of = {r["id"]: f for r, f in zip(rows, folds, strict=True)}
    x = data.x(LAYERS)
    ids = [r["id"] for r in data.rows]
    train = np.array([fold_of[i] != 0 for i in ids])
    test = np.array([i in adapter for i in ids])
    probe_all = fit_logistic(x[train], data.y[train], l2=L2)
    # The adapter's own training rows: the same stratified draw judge_adapter.py made.
    pool = [r for r, f in zip(rows, folds, strict=True) if f != 0]
    random.Random(0).shuffle(pool)
    share = min(1.0, meta["train_rows"] / len(pool))
    chosen = {r["id"] for lab in ("ethical", "unethical") for r in
              [p for p in pool if p["label"] == lab][: round(share * sum(p["label"] == lab for p in pool))]}
    same = np.array([i in chosen for i in ids])
    probe_same = fit_logistic(x[same], data.y[same], l2=L2)
    index = np.flatnonzero(test)
    y, source = data.y[index], data.source[index]
    signals = {
        "probe (all training folds)": probe_all.scores(x[index]),
        f"probe ({int(same.sum())} rows, as the adapter)": probe_same.scores(x[index]),
        "adapter": np.array([adapter[ids[i]]["adapter"] for i in index]),
        "words (base model, Yes/No)": np.array([adapter[ids[i]]["base_words"] for i in index]),
    }
    probe = signals["probe (all training folds)"]
    train_scores = probe_all.scores(x[train])
    lo, hi = np.quantile(train_scores, [0.5 - args.band / 2, 0.5 + args.band / 2])
    band = (probe >= lo) & (probe <= hi)
    for second in ("adapter", "words (base model, Yes/No)"):
        signals[f"mean: probe + {second}"] = (probe + signals[second]) / 2
        signals[f"cascade: probe, then {second} in the band"] = np.where(band, (probe + signals[second]) / 2, probe)
    report: dict[str, Any] = {"rows": {s: int((source == s).sum()) for s in sorted(set(source))},
                              "band": [round(float(lo), 4), round(float(hi), 4)],
                              "share_in_band": round(float(band.mean()), 4), "adapter_run": meta, "auc": {}}
    for name, scores in signals.items():
        report["auc"][name] = auc_by_source(scores, y, source)
        print(name, json.dumps(report["auc"][name]), flush=True)
    print("share of rows in the band:", report["share_in_band"])
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cascade.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
