"""The repair's off-topic check (issue 28): how far apart a request and an answer to it are, in
the frozen demo model's own states, against a request and another request's answer.

Pairs, from the demo model's own answers (bench/results/judge_onpolicy/answers.jsonl):
positives are (prompt, its own answer), negatives (prompt, another prompt's answer: a seeded
shuffle, no prompt paired with its own). Answers that are empty or read as a refusal are left
out: the discard step rejects those before the topic check reads them. Each answer is read
twice: whole, and as a raced draft's opening, the first `--window` characters cut at the last
whitespace (service/conscience/engine.py `window_end`; the default is
`--repair-draft-window-chars`), which is what the check sees of a raced draft.

Vectors: the embedded engine's /v1/embeddings (`LocalBackend.embeddings`: the final layer,
mean-pooled, unit length, as shipped) and, for comparison, the same pooling of a middle layer
(`--middle-layer`). The threshold is chosen on the XSTest-origin rows — the highest cosine at
which at most `--max-on-topic-discarded` of their on-topic openings fall below it — and reported
on the held-out written prompts' rows (origin `hand` and `written`): the share of on-topic
answers it would discard and of off-topic ones it catches (also at `--shipped`, the default of
`--repair-min-topic-similarity`, the measured threshold rounded down).

    PYTHONPATH=. .venv/bin/python bench/offtopic.py --out bench/results/offtopic.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.conscience.deltas import window_end  # noqa: E402
from service.conscience.refusal import is_refusal  # noqa: E402
from service.settings import Settings  # noqa: E402

ANSWERS = ROOT / "bench" / "results" / "judge_onpolicy" / "answers.jsonl"
HELD_OUT = ("hand", "written")


def opening(text: str, window: int) -> str:
    """What a raced draft's topic check reads: its first window, cut at whitespace."""
    return text if len(text) <= window else text[: window_end(text[: window + 1], 0, False)].strip()


def pairs(rows: list[dict[str, Any]], seed: int) -> list[tuple[int, int]]:
    """(prompt row, answer row): each row's own answer, and another row's (a derangement)."""
    order = list(range(len(rows)))
    shuffled = order[:]
    random.Random(seed).shuffle(shuffled)
    for index in order:  # a fixed point swapped with its neighbour: nobody gets their own answer
        if shuffled[index] == index:
            other = (index + 1) % len(order)
            shuffled[index], shuffled[other] = shuffled[other], shuffled[index]
    assert all(shuffled[index] != index for index in order), "a prompt paired with its own answer"
    return [(index, index) for index in order] + [(index, shuffled[index]) for index in order]


def threshold_at(on_topic: list[float], max_discarded: float) -> float:
    """The highest cosine t with share(on-topic < t) ≤ max_discarded (rounded down to 0.001)."""
    ranked = sorted(on_topic)
    allowed = int(max_discarded * len(ranked))  # this many on-topic pairs may fall below t
    return int(ranked[allowed] * 1000) / 1000


def rates(pos: list[float], neg: list[float], threshold: float) -> dict[str, Any]:
    return {
        "on_topic_pairs": len(pos), "off_topic_pairs": len(neg),
        "on_topic_discarded": round(sum(c < threshold for c in pos) / max(1, len(pos)), 4),
        "off_topic_caught": round(sum(c < threshold for c in neg) / max(1, len(neg)), 4),
    }


def cosine(a: list[float], b: list[float]) -> float:
    return float(sum(x * y for x, y in zip(a, b, strict=True)))  # both unit length


async def embed_all(args: argparse.Namespace, texts: list[str]) -> dict[str, list[list[float]]]:
    """Every text's vector of the final layer (the served /v1/embeddings) and of the middle layer."""
    from evaluation.backends import open_backend

    settings = Settings(backend="local", local_threads=args.threads)
    backend = await open_backend(settings)
    try:
        base = backend.engine.served_base_name
        final, middle = [], []
        started = time.time()
        for first in range(0, len(texts), 16):
            batch = texts[first : first + 16]
            served = await backend.embeddings({"model": base, "input": batch})
            final += [item["embedding"] for item in served["data"]]
            ids = [backend.engine.loaded.tokenizer(t, add_special_tokens=False)["input_ids"] for t in batch]
            middle += await backend.engine.embeddings(ids, layer=args.middle_layer)
            print(f"  {first + len(batch)}/{len(texts)} texts, {time.time() - started:.0f} s", flush=True)
        return {"final": final, "middle": middle}
    finally:
        await backend.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=Path, default=ANSWERS)
    parser.add_argument("--window", type=int, default=Settings.model_fields["repair_draft_window_chars"].default)
    parser.add_argument("--middle-layer", type=int, default=12)
    parser.add_argument("--max-on-topic-discarded", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shipped", type=float, default=Settings.model_fields["repair_min_topic_similarity"].default,
                        help="also report the held-out rates at this threshold (default: the shipped one)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "offtopic.json")
    args = parser.parse_args()

    rows = [json.loads(line) for line in args.answers.read_text().splitlines() if line.strip()]
    rows = [row for row in rows if row["completion"].strip() and not is_refusal(row["completion"])]
    prompts = [row["prompt"] for row in rows]
    openings = [opening(row["completion"], args.window) for row in rows]
    wholes = [row["completion"] for row in rows]
    started = time.time()
    vectors = asyncio.run(embed_all(args, prompts + openings + wholes))
    seconds = time.time() - started
    count = len(rows)
    report: dict[str, Any] = {
        "command": "PYTHONPATH=. .venv/bin/python bench/offtopic.py " + " ".join(sys.argv[1:]),
        "answers": str(args.answers.relative_to(ROOT)), "rows_kept": count,
        "left_out": "empty answers and refusals (discarded before the topic check)",
        "opening_chars": args.window, "middle_layer": args.middle_layer, "seed": args.seed,
        "max_on_topic_discarded_on_xstest": args.max_on_topic_discarded, "embedding_seconds": round(seconds),
        "results": {},
    }
    for layer, found in vectors.items():
        for read, offset in (("opening", count), ("whole", 2 * count)):
            scored = {"xstest": ([], []), "held_out": ([], [])}
            for prompt, answer in pairs(rows, args.seed):
                similarity = cosine(found[prompt], found[offset + answer])
                split = "xstest" if rows[prompt]["origin"] == "xstest" else "held_out"
                scored[split][0 if prompt == answer else 1].append(similarity)
            threshold = threshold_at(scored["xstest"][0], args.max_on_topic_discarded)
            report["results"][f"{layer}/{read}"] = {
                "threshold": threshold,
                "xstest": rates(*scored["xstest"], threshold),
                "held_out": rates(*scored["held_out"], threshold),
                f"held_out_at_{args.shipped}": rates(*scored["held_out"], args.shipped),
                "on_topic_median": round(sorted(scored["held_out"][0])[len(scored["held_out"][0]) // 2], 4),
                "off_topic_median": round(sorted(scored["held_out"][1])[len(scored["held_out"][1]) // 2], 4),
            }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["results"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
