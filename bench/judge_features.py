"""Hidden-state features of the frozen demo model for the judge study (issue 25), cached per row.

One forward pass per row over the ordinary chat (service/backends/local/hidden_states.py: the
prompt as the user turn, the answer as the assistant turn, answers cut to 384 tokens), with
every layer pooled two ways (`mean_answer`, `mean_all`; the prompt's mean follows from the two
and the span lengths) and the answer's per-token states of a few layers (float16) for span
scores. Rows are cached as `<cache>/<fingerprint>/<key>.npz` (the key hashes prompt, answer
and the cut), so a stopped run resumes and a row shared by two sources is read once.

    PYTHONPATH=. python bench/judge_features.py --source xstest --source beavertails
    PYTHONPATH=. python bench/judge_features.py --data bench/results/judge_onpolicy/rows.jsonl

bfloat16 by default: its pooled states agree with float32 to cosine 0.99998 on this model
(measured on 12 BeaverTails rows, every layer checked at 8/12/16/20/24) at 2.5x the speed on
this CPU; `--dtype float32` reads exactly what the engine serves.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
SOURCES = {
    "xstest": SHARED / "xstest" / "xstest_dev.jsonl",
    "beavertails": SHARED / "guard" / "beavertails.jsonl",
    "pairs": ROOT / "service" / "conscience" / "probes" / "contrast_pairs.jsonl",
}
DEFAULT_MODEL = str(Path.home() / ".cache/conscience/models/qwen2.5-coder-0.5b-instruct-q4_k_m-1d9614638d18024d")
DEFAULT_CACHE = Path("/tmp/judge-features")
MAX_ANSWER_TOKENS = 384
TOKEN_LAYERS = (8, 12, 16, 20)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def row_key(prompt: str, completion: str) -> str:
    body = json.dumps([prompt, completion, MAX_ANSWER_TOKENS], ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()[:24]


def feature_dir(cache: Path, fingerprint: str) -> Path:
    return cache / fingerprint[:16]


def load_row(directory: Path, row: dict[str, Any]) -> dict[str, Any] | None:
    import numpy as np

    path = directory / f"{row_key(row['prompt'], row['completion'])}.npz"
    if not path.exists():
        return None
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def extract(model: str, cache: Path, rows: list[dict[str, Any]], dtype: str, limit_s: float) -> Path:
    import numpy as np
    import torch

    from service.backends.local.hidden_states import answer_span, model_fingerprint
    from service.backends.local.loader import load_model

    torch.set_num_threads(2)
    loaded = load_model(model, cache_dir=Path.home() / ".cache/conscience/models", dtype=dtype)
    fingerprint = model_fingerprint(loaded)
    directory = feature_dir(cache, fingerprint)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fingerprint.txt").write_text(fingerprint + "\n")
    started = time.time()
    computed, seconds = 0, 0.0
    for number, row in enumerate(rows, 1):
        target = directory / f"{row_key(row['prompt'], row['completion'])}.npz"
        if target.exists():
            continue
        if time.time() - started > limit_s:
            break
        messages = [{"role": "user", "content": row["prompt"]}]
        span = answer_span(loaded.tokenizer, messages, row["completion"], max_answer_tokens=MAX_ANSWER_TOKENS)
        t0 = time.perf_counter()
        ids = torch.tensor([span.token_ids])
        with torch.inference_mode():
            out = loaded.model(input_ids=ids, use_cache=False, output_hidden_states=True, logits_to_keep=1)
        states = torch.stack([layer[0] for layer in out.hidden_states]).float()  # [L, T, H]
        p, a = span.prompt_len, span.answer_len
        answer = states[:, p : p + a] if a else states[:, p - 1 : p]
        tmp = directory / f".{target.stem}.tmp.npz"
        np.savez(
            tmp,
            mean_answer=answer.mean(dim=1).numpy(),
            mean_all=states.mean(dim=1).numpy(),
            last_prompt=states[:, p - 1].numpy(),
            tokens=answer[list(TOKEN_LAYERS)].to(torch.float16).numpy(),
            token_layers=np.array(TOKEN_LAYERS),
            prompt_len=p,
            answer_len=a,
            seconds=time.perf_counter() - t0,
            dtype=dtype,
        )
        tmp.replace(target)
        computed += 1
        seconds += time.perf_counter() - t0
        if computed % 100 == 0:
            print(f"  row {number}/{len(rows)}: {computed} computed, {seconds / computed:.3f} s/row", flush=True)
    print(f"features of {len(rows)} rows in {directory} ({computed} computed now)", flush=True)
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", action="append", default=[], choices=sorted(SOURCES))
    parser.add_argument("--data", action="append", type=Path, default=[], help="more JSONL rows")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--limit-s", type=float, default=float("inf"))
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for path in [SOURCES[name] for name in args.source] + args.data:
        found = [r for r in read_jsonl(path) if r.get("label") != "ambiguous"]
        random.Random(0).shuffle(found)  # a stopped run holds a sample of every source
        rows += found
    # Interleave sources so a partial cache is a sample of each.
    extract(args.model, args.cache, rows, args.dtype, args.limit_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
