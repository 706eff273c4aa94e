"""Drafts no reader would want: an answer that loops, or one that stops in the middle of a thought.

A small model sampled for a repair falls into loops ("The law also prohibits any use of weapons
in a manner that …" repeated to the token limit, issue 28); the judge passes such text, so it is
discarded before the judge, as refusals and near-copies are (service/conscience/review.py).

`loops`: the last `TAIL_WORDS` words of the text repeat their own word 4-grams: the share of
4-grams there that are repeats is at least `LOOP_REPEATED_SHARE`. The threshold was chosen on
XSTest's 1,125 answers by five models (the most repetitive tail: 0.24) and holds on BeaverTails'
3,019 answers (none at 0.3; the most repetitive 0.26); the demo model's own answers to 353
prompts have 9 at or above it, each repeating itself when read (`bench/degenerate.py`). Only the tail is
read, because a loop starts late and runs to the end: over the whole answer it is diluted.

`trails_off`: a draft that ended of its own accord (not at the token limit) on a word that
cannot end a sentence — a connective, an article, a list number, a colon.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)
TAIL_WORDS = 100
MIN_TAIL_WORDS = 40  # fewer words than this cannot show a loop
LOOP_REPEATED_SHARE = 0.3
LOOP_NGRAM = 4
_DANGLING = frozenset(
    "a an the and or but of to in on at for with by from as that which who whose if because so than "
    "such including like is are was were be".split()
)
_DANGLING_END = re.compile(r"(?:[:,;(\-–—]|\b\d+[.)])\s*$")


def tail_repetition(text: str, *, words: int = TAIL_WORDS, n: int = LOOP_NGRAM) -> float:
    """The share of word n-grams among the last `words` words that repeat one before them
    (0: none; 0.0 also when the tail is too short to tell)."""
    tail = _WORD.findall(text.lower())[-words:]
    if len(tail) < MIN_TAIL_WORDS:
        return 0.0
    grams = [tuple(tail[i : i + n]) for i in range(len(tail) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def loops(text: str) -> bool:
    return tail_repetition(text) >= LOOP_REPEATED_SHARE


def trails_off(text: str, *, finished: bool) -> bool:
    """An answer that stopped by itself (`finished`: not cut at the token limit) mid-thought."""
    if not finished:
        return False
    stripped = text.rstrip()
    if _DANGLING_END.search(stripped):
        return True
    if not stripped or stripped[-1] in ".!?\"')]*`":
        return False
    words = _WORD.findall(stripped.lower())
    return bool(words) and words[-1] in _DANGLING


def degenerate_reason(text: str, *, finished: bool) -> str | None:
    """Why a draft is degenerate ("loop" or "trails_off"), or None."""
    if loops(text):
        return "loop"
    if trails_off(text, finished=finished):
        return "trails_off"
    return None
