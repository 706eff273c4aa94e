"""Which verdict label a judge model's first token, or its short reply, stands for.

A BPE vocabulary rarely holds "unethical" as one token: the judge's first token is often a
piece such as " un" or "Eth". A token counts for a label when, stripped of leading whitespace
and case-folded, it equals the label or is a non-empty prefix of exactly one label; a piece
shared by two labels tells nothing and counts for neither.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def label_for_token(token: str, labels: Sequence[str]) -> str | None:
    piece = token.lstrip().casefold()
    if not piece:
        return None
    matches = []
    for label in labels:
        folded = label.casefold()
        if folded == piece:
            return label
        if folded.startswith(piece):
            matches.append(label)
    return matches[0] if len(matches) == 1 else None


def probs_from_top_logprobs(
    top_logprobs: Iterable[tuple[str, float]], labels: Sequence[str]
) -> dict[str, float]:
    """Sum of the probabilities of the tokens that count for each label; unseen labels absent;
    NaN for a label one of whose logprobs is unusable."""
    probs: dict[str, float] = {}
    for token, logprob in top_logprobs:
        label = label_for_token(token, labels)
        if label is not None:
            probs[label] = probs.get(label, 0.0) + _probability(logprob)
    return probs


# A logprob is at most 0; this much above is float rounding.
_LOGPROB_SLACK = 1e-6


def _probability(logprob: float) -> float:
    """exp(logprob), or NaN for a logprob no distribution has (NaN, or above 0): it makes the
    label's probability unusable, which the judge rejects, where exp would overflow."""
    return math.exp(logprob) if logprob <= _LOGPROB_SLACK else math.nan


def label_from_text(text: str, labels: Sequence[str]) -> str | None:
    """The label a reply starts with (the longest, when labels prefix each other), else the
    label the reply is a piece of (a one-token reply such as "un")."""
    folded = text.lstrip().casefold()
    starting = [label for label in labels if folded.startswith(label.casefold())]
    if starting:
        return max(starting, key=len)
    return label_for_token(text, labels)
