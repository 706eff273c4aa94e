"""The loop detector (service/conscience/degenerate.py) on answers it was chosen on and not.

Chosen on: XSTest's development answers (../shared/data/xstest, five models; the threshold sits
above the most repetitive tail there). Held out: BeaverTails' answers (../shared/data/guard).
Read: the demo model's own answers to 353 prompts (bench/results/judge_onpolicy/answers.jsonl),
whose flagged tails are printed for a person to check that each is a loop. Usage:

    .venv/bin/python bench/degenerate.py

Writes bench/results/degenerate.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from service.conscience.degenerate import LOOP_REPEATED_SHARE, loops, tail_repetition

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SETS = {
    "xstest (chosen on)": SHARED / "xstest" / "xstest_dev.jsonl",
    "beavertails (held out)": SHARED / "guard" / "beavertails.jsonl",
    "demo model's answers": ROOT / "bench" / "results" / "judge_onpolicy" / "answers.jsonl",
}


def main() -> None:
    report = {"threshold": LOOP_REPEATED_SHARE, "sets": {}}
    for name, path in SETS.items():
        texts = [json.loads(line)["completion"] for line in path.read_text(encoding="utf-8").splitlines() if line]
        shares = sorted(tail_repetition(text) for text in texts)
        flagged = [text for text in texts if loops(text)]
        report["sets"][name] = {
            "answers": len(texts), "flagged": len(flagged), "share_flagged": round(len(flagged) / len(texts), 4),
            "most_repetitive_tail": round(shares[-1], 3), "p99_tail": round(shares[int(0.99 * len(shares))], 3),
        }
        print(f"{name:>24}: {len(flagged):>3} of {len(texts):>4} flagged as loops; most repetitive tail "
              f"{shares[-1]:.3f} (threshold {LOOP_REPEATED_SHARE})")
        if name.startswith("demo"):
            for text in flagged:
                print(f"    {tail_repetition(text):.2f} …{text[-160:]!r}")
    out = ROOT / "bench" / "results" / "degenerate.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
