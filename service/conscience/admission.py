"""Bounds on the reviews in flight, so that no burst of requests multiplies into unbounded
upstream calls (each review is a judge call, and up to two more per repair attempt).

Two counts, in answers (a request counts each choice it asks for: prompts × `n`):
- running: enforce-mode answers admitted, being generated or under review;
- pending: monitor-mode answers admitted, being generated or waiting for (or under) their
  background review.

`reserve` charges a request's answers before they are generated, so a refused request costs
nothing upstream, and requests admitted together cannot overrun the bound between admission
and review: the slots stay taken from admission until the review ends.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from service.core.backend import Overloaded
from service.settings import Mode


class ReviewsSaturated(Overloaded):
    """429 with `Retry-After`: no room for this request's reviews now."""

    def __init__(self, kind: str, limit: int) -> None:
        super().__init__(
            f"The conscience is already reviewing as many {kind} answers as it may ({limit}); "
            "retry shortly.",
            code="reviews_saturated",
        )


class Reservation:
    """Review slots one request holds. `release` gives them back (only the first call counts);
    one the request dropped without releasing (a client gone before its stream started) is
    given back when it is garbage-collected, so no slot leaks."""

    def __init__(self, budget: ReviewBudget, mode: Mode, count: int) -> None:
        """Holds `count` slots that `budget` has already counted as taken."""
        self.mode = mode
        self._budget = budget
        self._count = count
        self._give_back = weakref.finalize(self, budget.give_back, mode, count)

    @property
    def held(self) -> int:
        """Slots still held (0 once released or handed on)."""
        return self._count if self._give_back.alive else 0

    def release(self) -> None:
        self._give_back()

    def transfer(self) -> Reservation:
        """The same slots in a new reservation (for a background task that outlives the
        request); this one holds nothing afterwards."""
        count = self.held
        self._give_back.detach()
        return Reservation(self._budget, self.mode, count)

    @staticmethod
    def empty(mode: Mode) -> Reservation:
        """A reservation of nothing (mode off, or a monitor request admitted without room)."""
        return Reservation(_NO_BUDGET, mode, 0)


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

    def reserve(self, mode: Mode, count: int) -> Reservation:
        """Take `count` slots in `mode` now (none in mode off); ReviewsSaturated without room."""
        if mode is Mode.OFF or count <= 0:
            return Reservation.empty(mode)
        self.admit(mode, count)
        self._take(mode, count)
        return Reservation(self, mode, count)

    def give_back(self, mode: Mode, count: int) -> None:
        self._take(mode, -count)

    @contextmanager
    def running(self, count: int, reserved: Reservation | None = None) -> Iterator[None]:
        """Hold `count` running reviews for the block, `reserved` ones first (released when
        the block ends); ReviewsSaturated when the rest find no room."""
        extra = max(0, count - (reserved.held if reserved is not None and reserved.mode is Mode.ENFORCE else 0))
        try:
            self.admit(Mode.ENFORCE, extra)
            self._running += extra
            try:
                yield
            finally:
                self._running -= extra
        finally:
            if reserved is not None:
                reserved.release()

    def pend(self, count: int, reserved: Reservation | None = None) -> Reservation | None:
        """A reservation of `count` pending reviews: `reserved`, topped up from the budget
        when it holds fewer; None (and `reserved` released) when the rest find no room."""
        held = reserved.held if reserved is not None and reserved.mode is Mode.MONITOR else 0
        if held >= count and reserved is not None:
            return reserved.transfer()
        if reserved is not None:
            reserved.release()
        try:
            return self.reserve(Mode.MONITOR, count)
        except ReviewsSaturated:
            return None

    def _take(self, mode: Mode, count: int) -> None:
        if mode is Mode.ENFORCE:
            self._running += count
        elif mode is Mode.MONITOR:
            self._pending += count


_NO_BUDGET = ReviewBudget(0, 0)
