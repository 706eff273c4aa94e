"""One server's graceful shutdown: when it began, what is left of its grace, the requests still
in flight.

On SIGTERM uvicorn stops accepting, waits up to `--shutdown-grace-s` for the requests in flight
(`timeout_graceful_shutdown`, service/api/server_limits.py), then cancels them and runs the
lifespan's shutdown. uvicorn tells the app none of this, so `HeadLimitedProtocol.shutdown`
(called on every open connection as the shutdown begins) starts the clock here; with no
connection open the lifespan's shutdown does. A request cancelled once the clock has started
was ended by the shutdown: it answers 503 (service/api/middleware.py) and its check record says
`shutdown` (service/conscience/pipeline.py). The lifespan lets the cancelled requests write
their records (`settle`) and gives monitor-mode reviews what is left of the grace before the
record writer drains.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

# The check record's `error` for a request, or a review, the shutdown ended.
SHUTDOWN_ERROR = "shutdown"
# Longest the lifespan waits for cancelled requests to write their records: they only unwind.
SETTLE_S = 2.0
# The key of the lifespan state (uvicorn's `app_state`) that holds the server's GracefulShutdown.
STATE_KEY = "conscience_shutdown"


class GracefulShutdown:
    """The shutdown clock and the requests in flight of one server (one worker process)."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._began: float | None = None
        self._requests: set[asyncio.Task[object]] = set()

    def begin(self) -> None:
        """The shutdown has begun (idempotent: the first call counts)."""
        if self._began is None:
            self._began = time.monotonic()

    @property
    def began(self) -> bool:
        return self._began is not None

    def remaining_s(self) -> float:
        """What is left of the grace (all of it before the shutdown has begun)."""
        if self._began is None:
            return self.grace_s
        return max(0.0, self._began + self.grace_s - time.monotonic())

    @contextmanager
    def request(self) -> Iterator[None]:
        """Around one request's handling, in its own task: `settle` waits for it."""
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing to wait for
            yield
            return
        self._requests.add(task)
        try:
            yield
        finally:
            self._requests.discard(task)

    async def settle(self, timeout_s: float = SETTLE_S) -> None:
        """Wait until the requests in flight have ended (cancelled ones write their records as
        they unwind), at most `timeout_s`."""
        if self._requests:
            await asyncio.wait(set(self._requests), timeout=timeout_s)
