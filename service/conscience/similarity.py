"""How much of a repair draft repeats the rejected answer: word n-gram overlap.

A small repairer shown the flagged answer copies it (measured: every draft in
bench/results/xstest_repair repeated it). Repairs are drafted without the answer in view, and a
draft that still shares most of its word n-grams with it is discarded as a near-copy.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)


def word_ngrams(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def ngram_overlap(draft: str, rejected: str, n: int = 3) -> float:
    """The fraction of the draft's word n-grams that also occur in the rejected answer (0: none
    shared, 1: every one); an empty draft overlaps 0."""
    mine = word_ngrams(draft, n)
    if not mine:
        return 0.0
    return len(mine & word_ngrams(rejected, n)) / len(mine)


def is_near_copy(draft: str, rejected: str, max_overlap: float, n: int = 3) -> bool:
    return ngram_overlap(draft, rejected, n) >= max_overlap
