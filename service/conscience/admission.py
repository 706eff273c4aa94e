"""Bounds on the reviews in flight, so that no burst of requests multiplies into unbounded
upstream calls (each review is a judge call, and up to two more per repair attempt).

Two counts, in answers (a request with `n` choices counts `n`):
- running: enforce-mode reviews the client is waiting for;
- pending: monitor-mode reviews scheduled in the background, waiting or running.

`admit` is asked before the answer is generated, so a refused request costs nothing upstream;
`running` and `try_pend` hold the bound even for requests admitted together.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from service.backends.base import Overloaded
from service.settings import Mode


class ReviewsSaturated(Overloaded):
    """429 with `Retry-After`: no room for this request's reviews now."""

    def __init__(self, kind: str, limit: int) -> None:
        super().__init__(
            f"The conscience is already reviewing as many {kind} answers as it may ({limit}); "
            "retry shortly.",
            code="reviews_saturated",
        )


class ReviewBudget:
    def __init__(self, max_running: int, max_pending: int) -> None:
        self._max_running = max_running
        self._max_pending = max_pending
        self._running = 0
        self._pending = 0

    @property
    def pending(self) -> int:
        return self._pending

    def admit(self, mode: Mode, count: int) -> None:
        """Raise ReviewsSaturated when `count` more reviews in `mode` would pass their bound."""
        if mode is Mode.ENFORCE and self._running + count > self._max_running:
            raise ReviewsSaturated("enforced", self._max_running)
        if mode is Mode.MONITOR and self._pending + count > self._max_pending:
            raise ReviewsSaturated("background", self._max_pending)

    @contextmanager
    def running(self, count: int) -> Iterator[None]:
        """Hold `count` running reviews for the block; ReviewsSaturated when there is no room."""
        self.admit(Mode.ENFORCE, count)
        self._running += count
        try:
            yield
        finally:
            self._running -= count

    def try_pend(self, count: int) -> bool:
        """Take `count` pending reviews if there is room (give them back with `done_pending`)."""
        if self._pending + count > self._max_pending:
            return False
        self._pending += count
        return True

    def done_pending(self, count: int) -> None:
        self._pending -= count
