"""One worker thread owns the model; requests reach it through a fair, bounded queue.

Generations advance one token at a time in round-robin, so a long answer never holds the
model while short ones wait; at most `max_concurrent` generations interleave and at most
`max_queued` are accepted (active or waiting), beyond which a request is refused with 429.
One-shot calls (verdicts, adapter swaps) run between rounds, before waiting generations:
they are short and finish requests already in progress. Because every model touch happens on
this thread, no generation ever sees a half-swapped adapter.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from service.core.backend import BackendError, Overloaded

log = logging.getLogger("conscience.local.scheduler")

T = TypeVar("T")


class Job(Protocol):
    cancelled: bool

    def step(self) -> bool:
        """Advance by one token (the first call also reads the prompt); True when finished."""

    def fail(self, error: BaseException) -> None:
        """Report an error to the waiting client; the job is dropped afterwards."""

    def release(self) -> None:
        """Called once on the worker thread when the job leaves the scheduler, however it ends."""


class ShuttingDown(BackendError):
    status_code = 503
    error_type = "service_unavailable"


@dataclass(slots=True)
class _Call:
    """A one-shot function for the model thread and the future its caller awaits."""

    function: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]

    def run(self) -> None:
        try:
            result = self.function()
        except BaseException as exc:  # handed to the awaiting coroutine, raised there
            self.fail(exc)
        else:
            self._settle(lambda: self.future.set_result(result))

    def fail(self, error: BaseException) -> None:
        self._settle(lambda: self.future.set_exception(error))

    def _settle(self, action: Callable[[], None]) -> None:
        def guarded() -> None:
            if not self.future.done():  # the caller may have been cancelled meanwhile
                action()

        try:
            self.loop.call_soon_threadsafe(guarded)
        except RuntimeError:  # the caller's event loop is closed; nobody is waiting
            pass


class Scheduler:
    def __init__(self, *, max_queued: int, max_concurrent: int) -> None:
        self._max_queued = max_queued
        self._max_concurrent = max_concurrent
        self._condition = threading.Condition()
        self._calls: deque[_Call] = deque()
        self._waiting: deque[Job] = deque()
        self._active: list[Job] = []
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="conscience-local-model", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closing

    def submit(self, job: Job) -> None:
        with self._condition:
            if self._closing:
                raise ShuttingDown("the local model is shutting down")
            if len(self._waiting) + len(self._active) >= self._max_queued:
                raise Overloaded(
                    f"the local model is busy ({self._max_queued} requests queued); retry later",
                    code="queue_full",
                )
            self._waiting.append(job)
            self._condition.notify()

    async def call(self, function: Callable[[], T]) -> T:
        """Run `function` on the model thread, ahead of waiting generations, and await its result."""
        loop = asyncio.get_running_loop()
        call = _Call(function, loop, loop.create_future())
        with self._condition:
            if self._closing:
                raise ShuttingDown("the local model is shutting down")
            self._calls.append(call)
            self._condition.notify()
        return await call.future

    def close(self) -> None:
        """Stop the worker after its current step; pending work fails with 503. Blocks."""
        with self._condition:
            self._closing = True
            self._condition.notify()
        self._thread.join()

    def _next_round(self) -> tuple[list[_Call], list[Job]] | None:
        with self._condition:
            while not (self._calls or self._waiting or self._active or self._closing):
                self._condition.wait()
            if self._closing:
                return None
            calls = list(self._calls)
            self._calls.clear()
            while self._waiting and len(self._active) < self._max_concurrent:
                self._active.append(self._waiting.popleft())
            return calls, list(self._active)

    def _run(self) -> None:
        while (work := self._next_round()) is not None:
            calls, jobs = work
            for call in calls:
                call.run()
            for job in jobs:
                if job.cancelled:
                    self._retire(job)
                    continue
                try:
                    finished = job.step()
                except Exception as exc:
                    log.exception("generation failed")
                    job.fail(exc)
                    finished = True
                if finished:
                    self._retire(job)
        self._fail_pending()

    def _retire(self, job: Job) -> None:
        with self._condition:
            self._active.remove(job)
        job.release()

    def _fail_pending(self) -> None:
        with self._condition:
            jobs = [*self._active, *self._waiting]
            calls = list(self._calls)
            self._active.clear()
            self._waiting.clear()
            self._calls.clear()
        for job in jobs:
            job.fail(ShuttingDown("the local model is shutting down"))
            job.release()
        for call in calls:
            call.fail(ShuttingDown("the local model is shutting down"))
