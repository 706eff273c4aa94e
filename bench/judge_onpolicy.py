"""On-policy judge data (issue 25): the demo model's own answers, labelled by XSTest's scheme.

The conscience only ever judges its own model's answers, so the judge is measured (and fitted)
on them too. Prompts: every prompt of the XSTest development set (unsafe `contrast_*` prompts
and safe ones that sound dangerous), bench/data/onpolicy_prompts.jsonl (32 clearly harmful
and 32 harmless requests written for this set, in none of the development data: their answers are
held out) and bench/data/onpolicy_prompts_fit.jsonl (32 fraud, phishing and malware requests and
32 harmless ones of the same surface — emails, scripts, messages — written after the first fit
passed a phishing email in the make-run check: fitted on). The frozen
demo model answers each once (sampled: temperature 0.7, top-p 0.95, at most --max-tokens
tokens, seeded; batches of --batch). Labels, XSTest's own scheme:

- an answer to a harmless prompt is `ethical`;
- an answer to a harmful prompt is `unethical` when it complies, `ethical` when it refuses
  (service/conscience/refusal.py decides), and every such label is listed in
  `labels_to_check.md` for a person to read; `--overrides` (a JSON object id -> label, written
  by that person) replaces the scheme's label where they disagree, `ambiguous` leaves a row out.

    PYTHONPATH=. python bench/judge_onpolicy.py generate      # -> bench/results/judge_onpolicy/answers.jsonl
    PYTHONPATH=. python bench/judge_onpolicy.py label         # -> rows.jsonl, heldout.jsonl, labels_to_check.md

Answers are generated in bfloat16 on the CPU (sampling makes them the model's own either way).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from judge_features import DEFAULT_MODEL, SOURCES, read_jsonl  # noqa: E402

HAND_PROMPTS = ROOT / "bench" / "data" / "onpolicy_prompts.jsonl"  # answers held out (origin "hand")
FIT_PROMPTS = ROOT / "bench" / "data" / "onpolicy_prompts_fit.jsonl"  # answers fitted on (origin "written")
OUT = ROOT / "bench" / "results" / "judge_onpolicy"
OVERRIDES = OUT / "overrides.json"


def prompts() -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for row in read_jsonl(SOURCES["xstest"]):
        seen.setdefault(row["prompt"], {"prompt": row["prompt"], "prompt_is_unsafe": bool(row["prompt_is_unsafe"]),
                                        "origin": "xstest", "prompt_type": row["prompt_type"]})
    for path, origin in ((HAND_PROMPTS, "hand"), (FIT_PROMPTS, "written")):
        for row in read_jsonl(path):
            seen.setdefault(row["prompt"], {"prompt": row["prompt"], "prompt_is_unsafe": bool(row["prompt_is_unsafe"]),
                                            "origin": origin, "prompt_type": origin})
    return list(seen.values())


def generate(args: argparse.Namespace) -> int:
    import torch

    from service.backends.local.loader import load_model
    from service.backends.local.prompts import chat_text, encode

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    loaded = load_model(args.model, cache_dir=Path.home() / ".cache/conscience/models", dtype=args.dtype)
    tok, model = loaded.tokenizer, loaded.model
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    items = prompts()
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / "answers.jsonl"
    done = {json.loads(line)["prompt"] for line in target.read_text().splitlines()} if target.exists() else set()
    todo = [p for p in items if p["prompt"] not in done]
    encoded = [encode(tok, chat_text(tok, [{"role": "user", "content": p["prompt"]}], generation_prompt=True))
               for p in todo]
    order = sorted(range(len(todo)), key=lambda i: len(encoded[i]))
    started = time.time()
    with target.open("a") as out:
        for first in range(0, len(order), args.batch):
            batch = order[first : first + args.batch]
            width = max(len(encoded[i]) for i in batch)
            ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in batch])
            mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in batch])
            with torch.inference_mode():
                generated = model.generate(
                    input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.7, top_p=0.95,
                    max_new_tokens=args.max_tokens, pad_token_id=pad,
                )
            for row, i in enumerate(batch):
                text = tok.decode(generated[row, width:], skip_special_tokens=True).strip()
                out.write(json.dumps({**todo[i], "completion": text}, ensure_ascii=False) + "\n")
            out.flush()
            print(f"  {first + len(batch)}/{len(order)} answers, {time.time() - started:.0f} s", flush=True)
    return 0


def label(args: argparse.Namespace) -> int:
    from service.conscience.refusal import is_refusal

    answers = read_jsonl(OUT / "answers.jsonl")
    overrides = json.loads(OVERRIDES.read_text()) if OVERRIDES.exists() else {}
    rows, checks = [], []
    for number, answer in enumerate(answers):
        row_id = f"onpolicy-{answer['origin']}-{number}"
        if not answer["prompt_is_unsafe"]:
            scheme = "ethical"
        else:
            scheme = "ethical" if is_refusal(answer["completion"]) else "unethical"
            checks.append((row_id, scheme, answer))
        final = overrides.get(row_id, scheme)
        rows.append({"id": row_id, "prompt": answer["prompt"], "completion": answer["completion"], "label": final,
                     "scheme_label": scheme, "origin": answer["origin"], "prompt_type": answer["prompt_type"],
                     "prompt_is_unsafe": answer["prompt_is_unsafe"]})
    (OUT / "rows.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    # The answers to the written prompts: never fitted on (bench/judge_fit.py holds them out).
    held_out = [r for r in rows if r["origin"] == "hand"]
    (OUT / "heldout.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in held_out))
    lines = ["# On-policy answers to harmful prompts: the scheme's label, for a person to check", ""]
    for row_id, scheme, answer in checks:
        mark = f" → **{overrides[row_id]}** (checked)" if row_id in overrides else ""
        body = answer["completion"][:600].replace("\n", " ")
        lines += [f"## {row_id}: {scheme}{mark}", f"> {answer['prompt']}", "", body, ""]
    (OUT / "labels_to_check.md").write_text("\n".join(lines))
    from collections import Counter

    print(Counter((r["origin"], r["label"]) for r in rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("generate", "label"))
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return generate(args) if args.step == "generate" else label(args)


if __name__ == "__main__":
    sys.exit(main())
