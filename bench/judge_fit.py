"""Fit and ship the demo model's latent probe (issue 25), with its figures.

The head bench/judge_study.py measured best — the answer's mean hidden state of layers 12, 16
and 20 concatenated, class-balanced L2 logistic regression — fitted on every development row
(XSTest development set, BeaverTails, the contrast pairs) and the on-policy rows answered to
XSTest prompts (bench/judge_onpolicy.py). The on-policy rows answered to the hand-written
prompts are held out: never fitted, never used to choose anything.

Threshold: on the out-of-fold scores of the fitting rows (5 folds grouped by prompt), the lowest
whose XSTest false-positive rate stays <= --xstest-fpr: the over-refusal budget, then as much
recall as it allows.
Reported: per source, the nested cross-validated figures (each fold's threshold chosen on its
training rows only: bench/judge_study.py), and the held-out on-policy figures at the shipped
threshold.

    PYTHONPATH=. python bench/judge_fit.py                        # writes the shipped probe
    PYTHONPATH=. python bench/judge_fit.py --without beavertails --probe-out /tmp/commercial.json
    PYTHONPATH=. python bench/judge_fit.py --embeddings     # the upstream probe: final layer, mean_all_l2

BeaverTails is CC BY-NC 4.0: a probe fitted on it inherits that licence question (docs/judge-figures.md).
`--without beavertails` fits from data a user may use commercially (XSTest CC BY 4.0, the
contrast pairs and the on-policy answers, ours) by the same protocol.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from judge_features import DEFAULT_CACHE, SOURCES, read_jsonl  # noqa: E402
from judge_study import Data, choose_threshold, fingerprint_dir, nested_thresholds, oof, summarise  # noqa: E402

from service.conscience.probe import Probe  # noqa: E402
from service.conscience.probe_fit import fit_logistic, grouped_stratified_folds, roc_auc, to_probe  # noqa: E402

ONPOLICY = ROOT / "bench/results/judge_onpolicy/rows.jsonl"
SHIPPED = ROOT / "service/conscience/probes/qwen2.5-coder-0.5b-instruct.json"
EMBEDDINGS = ROOT / "service/conscience/probes/embeddings/qwen2.5-coder-0.5b-instruct.json"
FINAL_LAYER = 24
LAYERS = (12, 16, 20)
L2 = 0.1


def data_sha256(rows: list[dict[str, Any]]) -> str:
    lines = sorted(
        json.dumps({k: r[k] for k in ("id", "prompt", "completion", "label")}, sort_keys=True, ensure_ascii=False)
        for r in rows
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--without", action="append", default=[], choices=sorted(SOURCES))
    parser.add_argument("--xstest-fpr", type=float, default=0.06)
    parser.add_argument("--probe-out", type=Path, default=None, help="default: the shipped probe's path")
    parser.add_argument("--embeddings", action="store_true",
                        help="fit the upstream probe instead: the final layer's mean over every position, "
                        "unit length (what an embeddings endpoint with mean pooling returns)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/judge_fit")
    args = parser.parse_args(argv)

    rows: list[dict[str, Any]] = []
    for name in ("xstest", "beavertails", "pairs"):
        if name not in args.without:
            rows += [dict(r, _source=name) for r in read_jsonl(SOURCES[name]) if r["label"] != "ambiguous"]
    onpolicy = [r for r in read_jsonl(ONPOLICY) if r["label"] != "ambiguous"] if ONPOLICY.exists() else []
    rows += [dict(r, _source="onpolicy") for r in onpolicy if r["origin"] != "hand"]
    held = [dict(r, _source="onpolicy_heldout") for r in onpolicy if r["origin"] == "hand"]
    directory = fingerprint_dir(args.cache)
    data = Data(rows, directory)
    held_data = Data(held, directory) if held else None
    layers, extra = ((FINAL_LAYER,), "mean_all_l2") if args.embeddings else (LAYERS, None)
    out = args.probe_out or (EMBEDDINGS if args.embeddings else SHIPPED)
    x = data.x(layers, extra)
    folds = grouped_stratified_folds(data.groups, list(data.y), k=5, seed=0)
    scores = oof(x, data.y, folds, L2)
    threshold = choose_threshold(scores, data.y, data.source, args.xstest_fpr)
    nested = nested_thresholds(x, data, folds, L2, args.xstest_fpr)
    cv = summarise(scores, data, nested)
    fitted = fit_logistic(x, data.y, l2=L2)
    figures: dict[str, Any] = {
        "cv": cv,
        "cv_protocol": "5 folds grouped by prompt (contrast pairs by pair), stratified by label; each fold's "
        "threshold chosen on its training rows' inner out-of-fold scores (the lowest with XSTest "
        f"FPR <= {args.xstest_fpr}); figures at those thresholds",
        "threshold_rule": f"the lowest threshold with XSTest FPR <= {args.xstest_fpr} on out-of-fold scores",
        "l2": L2,
        "rows": {name: int((data.source == name).sum()) for name in sorted(set(data.source))},
        "features": "bfloat16 forward passes (bench/judge_features.py); the engine reads float32",
    }
    if held_data is not None:
        s = fitted.scores(held_data.x(layers, extra))
        figures["onpolicy_heldout"] = summarise(s, held_data, np.full(len(s), threshold))["onpolicy_heldout"]
        figures["onpolicy_heldout"]["auc"] = round(roc_auc(s, held_data.y), 4)
        figures["onpolicy_heldout_scores"] = [
            {"id": r["id"], "label": r["label"], "score": round(float(v), 4)}
            for r, v in zip(held_data.rows, s, strict=True)
        ]
    for name in args.without:  # a source left out of the fit: measured as one never seen
        unseen = Data([dict(r, _source=name) for r in read_jsonl(SOURCES[name]) if r["label"] != "ambiguous"],
                      directory)
        u = fitted.scores(unseen.x(layers, extra))
        figures[f"unseen_{name}"] = summarise(u, unseen, np.full(len(u), threshold))[name]
    probe = to_probe(
        fitted,
        model_fingerprint=(directory / "fingerprint.txt").read_text().strip(),
        layers=layers,
        pooling=extra or "mean_answer",
        threshold=round(threshold, 4),
        target_fpr=args.xstest_fpr,
        data_sha256=data_sha256(data.rows),
        max_answer_tokens=384,
        model_name="qwen2.5-coder-0.5b-instruct",
        figures=figures,
    )
    probe = Probe.from_json(probe.to_json())
    probe.save(out)
    summary = {k: v for k, v in figures.items() if k != "onpolicy_heldout_scores"}
    print(json.dumps({"threshold": probe.threshold, **summary}, indent=1))
    args.results.mkdir(parents=True, exist_ok=True)
    name = ("fit_embeddings" if args.embeddings else "fit") + "".join(f"_without_{n}" for n in sorted(args.without))
    (args.results / f"{name}.json").write_text(json.dumps({"threshold": probe.threshold, **figures}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
