"""What windowed judging costs over a long answer: judge calls and characters the judge reads,
whole answer so far per window (before) vs a bounded context (after), side by side in one run.

The real `Enforcement` and `Judge` (fast style, the default framework, the default window
settings) over an 18 KB answer streamed word by word; the backend counts what the judge is sent
and passes everything. Usage:

    .venv/bin/python bench/windowed_judging.py [--answer-chars 18000] [--window-chars 400]

Prints a table and writes bench/results/windowed_judging.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from service.conscience.deltas import streamed_drafts
from service.conscience.engine import Enforcement
from service.conscience.judge import Judge
from service.core.backend import LabelProbs
from service.frameworks import load_frameworks
from service.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "windowed_judging.json"
SENTENCE = "Knead the dough for ten minutes, then let it rise in a warm place for about an hour. "
CONVERSATION = [{"role": "user", "content": "How do I bake bread? Explain every step in detail."}]


class CountingBackend:
    """A judge model that passes every answer and counts the calls and characters it is sent."""

    def __init__(self) -> None:
        self.calls = 0
        self.chars = 0

    async def label_probs(self, model: str, messages: list[Any], labels: Sequence[str]) -> LabelProbs:
        self.calls += 1
        self.chars += sum(len(str(m.get("content") or "")) for m in messages)
        return LabelProbs(probs={"No": 0.97, "Yes": 0.03}, source="logprobs")


async def words(text: str) -> AsyncIterator[str]:
    """The answer word by word, paced (a generation is slower than a verdict here, so that every
    window is judged at its size, as with a model generating a few dozen tokens a second)."""
    for word in text.split(" "):
        await asyncio.sleep(0.001)
        yield word + " "


async def measure(answer: str, window_chars: int, context_chars: int | None) -> dict[str, Any]:
    settings = Settings()
    backend = CountingBackend()
    judge = Judge(
        backend,  # type: ignore[arg-type]  # only label_probs is called in the fast style
        threshold=settings.judge.threshold, max_answer_chars=settings.judge.max_answer_chars,
        reasoned_max_tokens=settings.judge.reasoned_max_tokens,
        window_overlap_chars=settings.judge.window_overlap_chars, max_windows=settings.judge.max_windows,
    )
    framework = load_frameworks()[settings.policy.framework]

    async def verdict(so_far: str) -> Any:
        return await judge.judge(framework, CONVERSATION, so_far, judge_model="judge")

    async def no_repair(released: str, attempt: int) -> AsyncIterator[str]:
        raise AssertionError("nothing is flagged")
        yield ""

    review = Enforcement(
        words(answer), window_chars=window_chars, judge=verdict, drafts=streamed_drafts(no_repair),
        refusal="", max_repairs=0, judge_context_chars=context_chars,
    )
    released = "".join([text async for text in review])
    assert released.strip() == answer.strip()
    return {
        "context_chars": context_chars, "windows": len(review.outcome.windows), "judge_calls": backend.calls,
        "judge_chars": backend.chars, "judge_chars_per_answer_char": round(backend.chars / len(answer), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answer-chars", type=int, default=18_000)
    parser.add_argument("--window-chars", type=int, default=Settings().policy.stream_window_chars)
    args = parser.parse_args()
    answer = (SENTENCE * (args.answer_chars // len(SENTENCE) + 1))[: args.answer_chars]
    default_context = Settings().policy.stream_judge_context_chars
    rows = [
        asyncio.run(measure(answer, args.window_chars, None)),
        asyncio.run(measure(answer, args.window_chars, default_context)),
    ]
    print(f"answer {len(answer)} characters, windows of {args.window_chars}")
    print(f"{'context':>10} {'windows':>8} {'judge calls':>12} {'chars judged':>13} {'× answer':>9}")
    for row in rows:
        context = "whole" if row["context_chars"] is None else str(row["context_chars"])
        print(f"{context:>10} {row['windows']:>8} {row['judge_calls']:>12} {row['judge_chars']:>13} "
              f"{row['judge_chars_per_answer_char']:>9}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"answer_chars": len(answer), "window_chars": args.window_chars, "rows": rows},
                                  indent=2) + "\n")


if __name__ == "__main__":
    main()
