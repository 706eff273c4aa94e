"""The latent verdict as the answer streams (issue 25): how early it flags, what it costs.

The shipped probe scores the mean of the answer's hidden states so far, which the engine holds
already while it generates (service/backends/local/latent.py records the probe layers' states
for every generated token: nothing is read twice). This reads the per-token states cached by
bench/judge_features.py and scores each answer's prefix every --every tokens, at the shipped
threshold:

- harmful answers: the share flagged at some prefix, and the share of the answer read (tokens)
  when the score first crosses the threshold;
- harmless answers: flagged on their first window (the first --first-window tokens: about the
  proxy's 400-character stream window), and flagged at any prefix;
- the decode overhead: one decode step of the demo model against what scoring a token adds
  (the running mean and the probe's dot product), timed on this CPU.

    PYTHONPATH=. python bench/judge_streaming.py --out bench/results/judge_streaming
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from judge_features import DEFAULT_CACHE, DEFAULT_MODEL, SOURCES, read_jsonl  # noqa: E402
from judge_study import Data, fingerprint_dir  # noqa: E402

from service.conscience.probe import load_probe, shipped_probe_path  # noqa: E402

ONPOLICY = ROOT / "bench/results/judge_onpolicy/rows.jsonl"


def prefix_scores(probe: Any, states: np.ndarray, every: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, scores): the probe on the mean of the first k answer tokens, k = every, 2*every, ..., all."""
    weights = np.asarray(probe.weights) / np.asarray(probe.feature_scale)
    bias = probe.bias - float(np.asarray(probe.feature_mean) @ weights)
    cumulative = np.cumsum(states.astype(np.float64), axis=0)
    positions = np.unique(np.append(np.arange(every, len(states) + 1, every), len(states)))
    means = cumulative[positions - 1] / positions[:, None]
    return positions, 1.0 / (1.0 + np.exp(-(means @ weights + bias)))


def decode_overhead(model_path: str, probe: Any, steps: int) -> dict[str, float]:
    import torch

    from service.backends.local.loader import load_model

    torch.set_num_threads(2)
    loaded = load_model(model_path, cache_dir=Path.home() / ".cache/conscience/models")  # float32, as served
    model = loaded.model
    ids = torch.tensor([loaded.tokenizer.encode("Write a short poem about the sea.")])
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True, output_hidden_states=True)
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        step_times, score_times = [], []
        running = np.zeros(len(probe.weights))
        for step in range(steps):
            t0 = time.perf_counter()
            out = model(input_ids=token, past_key_values=cache, use_cache=True, output_hidden_states=True)
            cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            t1 = time.perf_counter()
            state = torch.cat([out.hidden_states[layer][0, -1] for layer in probe.layers]).float().numpy()
            running += state
            probe.score((running / (step + 1)).tolist())
            t2 = time.perf_counter()
            step_times.append(t1 - t0)
            score_times.append(t2 - t1)
    step, score = float(np.median(step_times)), float(np.median(score_times))
    return {"decode_step_ms": round(step * 1e3, 2), "token_score_ms": round(score * 1e3, 3),
            "overhead": round(score / step, 4), "steps": steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--every", type=int, default=16)
    parser.add_argument("--first-window", type=int, default=96)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--decode-only", action="store_true", help="only time the decode overhead")
    parser.add_argument("--no-decode", action="store_true", help="skip timing the decode overhead")
    args = parser.parse_args(argv)
    probe = load_probe(shipped_probe_path("qwen2.5-coder-0.5b-instruct"))
    rows = []
    for name in ("xstest", "beavertails"):
        rows += [dict(r, _source=name) for r in read_jsonl(SOURCES[name]) if r["label"] != "ambiguous"]
    if ONPOLICY.exists():
        rows += [dict(r, _source="onpolicy") for r in read_jsonl(ONPOLICY) if r["label"] != "ambiguous"]
    data = Data(rows, fingerprint_dir(args.cache))
    report: dict[str, Any] = {"threshold": probe.threshold, "every_tokens": args.every,
                              "first_window_tokens": args.first_window, "sources": {}}
    target = None if args.out is None else args.out / "streaming.json"
    if target is not None and target.exists():
        report = json.loads(target.read_text()) | {k: v for k, v in report.items() if k != "sources"}
    for source in () if args.decode_only else sorted(set(data.source)):
        read_shares, read_tokens, flagged_any, whole, first, any_harmless = [], [], [], [], [], []
        for index in np.flatnonzero(data.source == source):
            states = data.tokens(int(index), probe.layers)
            positions, scores = prefix_scores(probe, states, args.every)
            crossed = np.flatnonzero(scores >= probe.threshold)
            if data.y[index] == 1:
                whole.append(scores[-1] >= probe.threshold)
                flagged_any.append(len(crossed) > 0)
                if len(crossed):
                    read_tokens.append(int(positions[crossed[0]]))
                    read_shares.append(positions[crossed[0]] / len(states))
            else:
                in_first = positions <= max(args.first_window, positions[0])
                first.append(bool((scores[in_first] >= probe.threshold).any()))
                any_harmless.append(len(crossed) > 0)
        report["sources"][source] = {
            "harmful": len(whole),
            "recall_whole_answer": round(float(np.mean(whole)), 4) if whole else None,
            "recall_streaming": round(float(np.mean(flagged_any)), 4) if flagged_any else None,
            "share_read_at_first_flag_median": round(float(np.median(read_shares)), 4) if read_shares else None,
            "share_read_at_first_flag_mean": round(float(np.mean(read_shares)), 4) if read_shares else None,
            "tokens_read_at_first_flag_median": float(np.median(read_tokens)) if read_tokens else None,
            "harmless": len(first),
            "fpr_first_window": round(float(np.mean(first)), 4) if first else None,
            "fpr_any_prefix": round(float(np.mean(any_harmless)), 4) if any_harmless else None,
        }
        print(source, json.dumps(report["sources"][source]), flush=True)
    if not args.no_decode:
        report["decode"] = decode_overhead(args.model, probe, args.steps)
        print(json.dumps(report["decode"]), flush=True)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
