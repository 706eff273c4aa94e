"""What bounds a repair: the client's own limits on every draft, and the conscience's budget
over all the drafts of one answer.

Issue 28 measured the unbounded loop: a client that asked for 200 tokens got a repaired answer
of 512 (the repairer's own token budget), after 2,800 tokens and 730 s of drafting. Now:

- `DraftLimits`: the request's `max_completion_tokens` / `max_tokens` (`max_output_tokens` on the
  Responses API) and `stop` bound every draft, as they bound the answer it replaces;
- `RepairBudget`: all the drafts of one answer together spend at most `max_tokens` completion
  tokens and `max_seconds` of wall-clock time; once either is spent the repair loop ends with the
  refusal, its error saying so (`REPAIR_BUDGET_SPENT`), never with an over-long answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

REPAIR_BUDGET_SPENT = "repair budget spent"  # the error of a review whose repair ran out of budget


class BudgetSpent(Exception):
    """The repair budget of an answer is spent; `str()` says which part ("tokens", "seconds")."""


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


@dataclass(frozen=True, slots=True)
class DraftLimits:
    """The client's limits on its answer, which every draft replacing it honours."""

    max_tokens: int | None = None  # None: the client set none (the repairer's own budget applies)
    stop: tuple[str, ...] = ()

    @classmethod
    def of(cls, body: dict[str, Any]) -> DraftLimits:
        """The limits a request body sets (invalid values are the upstream's to refuse: ignored)."""
        wanted = next(
            (value for name in ("max_completion_tokens", "max_tokens", "max_output_tokens")
             if (value := _positive_int(body.get(name))) is not None),
            None,
        )
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
        return cls(wanted, tuple(item for item in stops if isinstance(item, str) and item))

    def tokens(self, configured: int, *, spent: int = 0) -> int:
        """A draft's token budget: the repairer's `configured` one, at most what the client
        allows after the `spent` tokens it already has (a continued stream); at least 0."""
        allowed = configured if self.max_tokens is None else min(configured, self.max_tokens - spent)
        return max(0, allowed)


@dataclass(slots=True)
class RepairBudget:
    """One answer's repair budget; the repair loop starts its clock, the repairer charges tokens."""

    max_tokens: int | None = None
    max_seconds: float | None = None
    spent_tokens: int = 0
    _started: float | None = None

    def start(self) -> None:
        if self._started is None:
            self._started = time.monotonic()

    def charge(self, tokens: int) -> None:
        self.spent_tokens += max(0, tokens)

    def tokens_left(self) -> int | None:
        return None if self.max_tokens is None else max(0, self.max_tokens - self.spent_tokens)

    def seconds_left(self) -> float | None:
        if self.max_seconds is None:
            return None
        elapsed = 0.0 if self._started is None else time.monotonic() - self._started
        return max(0.0, self.max_seconds - elapsed)

    def spent(self) -> str | None:
        """What is spent ("tokens" or "seconds"), or None while both are left."""
        if self.tokens_left() == 0:
            return "tokens"
        if self.seconds_left() == 0.0:
            return "seconds"
        return None

    def draft_tokens(self, wanted: int, choices: int = 1) -> int:
        """`wanted`, the tokens each of `choices` drafts generated together may take, when the
        budget left affords all of them at that length; else BudgetSpent: a draft cut short by
        the budget would be an unfinished answer, never to be sent."""
        left = self.tokens_left()
        if left is not None and wanted * max(1, choices) > left:
            raise BudgetSpent("tokens")
        return wanted
