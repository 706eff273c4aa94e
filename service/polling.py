"""The one background poller: call `tick` every `interval_s` until stopped.

Used by the API-key cache, the model-name follower and the local engine's adapter watcher.
The first call comes after one interval (each owner does its first load itself, at start-up,
where a failure is reported); `tick` handles its own errors: one that escapes is logged and
the polling goes on, so a database outage never ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("conscience.polling")


class Poller:
    def __init__(self, tick: Callable[[], Awaitable[None]], interval_s: float, name: str) -> None:
        self._tick = tick
        self._interval_s = interval_s
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._forever(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self._tick()
            except Exception:
                log.warning("%s: poll failed", self._name, exc_info=True)
