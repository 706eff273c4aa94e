"""A limit on wrong keys per client address: admin key guesses (admin API, console login) and
metrics key guesses count together, so no door gives a guesser more tries than another.

In-process: each server process (each of --workers, each replica) counts its own, so the
bound a guesser meets is `max_failures` times the processes it reaches. Behind a reverse
proxy every client has the proxy's address, unless uvicorn is told to trust its
X-Forwarded-For; then one guesser locks everyone out of the admin key for the window (a
nuisance, never a way in).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request

from service.settings import Settings

# Addresses remembered at once: beyond it the longest-quiet are forgotten, so a flood of
# addresses (IPv6 makes them cheap) costs bounded memory.
MAX_TRACKED_ADDRESSES = 10_000


@dataclass(slots=True)
class AuthFailures:
    """Failed key attempts per client address within a sliding window of `window_s` seconds."""

    max_failures: int
    window_s: float
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthFailures:
        return cls(settings.security.auth_max_failures, settings.security.auth_failure_window_s)

    def retry_after_s(self, address: str) -> int | None:
        """Whole seconds until `address` may try again; None while it is under the limit."""
        recent = self._recent(address)
        if recent is None or len(recent) < self.max_failures:
            return None
        # The oldest failure that keeps the address at the limit must leave the window.
        blocking = recent[len(recent) - self.max_failures]
        return max(1, math.ceil(blocking + self.window_s - self.clock()))

    def failed(self, address: str) -> None:
        recent = self._recent(address)
        if recent is None:
            if len(self._failures) >= MAX_TRACKED_ADDRESSES:
                self._forget_quietest()
            recent = self._failures[address] = deque(maxlen=self.max_failures)
        else:
            self._failures[address] = self._failures.pop(address)  # most recent last
        recent.append(self.clock())

    def _recent(self, address: str) -> deque[float] | None:
        recent = self._failures.get(address)
        if recent is None:
            return None
        horizon = self.clock() - self.window_s
        while recent and recent[0] <= horizon:
            recent.popleft()
        if not recent:
            del self._failures[address]
            return None
        return recent

    def _forget_quietest(self) -> None:
        del self._failures[next(iter(self._failures))]


def client_address(request: Request) -> str:
    """The peer's address as the server sees it (uvicorn's, after any trusted proxy headers)."""
    return request.client.host if request.client else "unknown"


def auth_failures(request: Request) -> AuthFailures:
    """The app's counter, made on first use from its settings (any app that serves the admin
    router gets one, test apps included)."""
    state = request.app.state
    counter: AuthFailures | None = getattr(state, "auth_failures", None)
    if counter is None:
        counter = state.auth_failures = AuthFailures.from_settings(state.settings)
    return counter
