"""Every choice of one streamed answer through its own enforcement (service/conscience/engine.py),
run together, and recorded on every way the stream can end.

`StreamedChoices` yields `(index, text)` as each choice's enforcement releases text — window by
window, or, with an unbounded window (a buffered answer: tools, logprobs, a batch), once at the
end; the HTTP edge only turns the text into chunks. Whatever ends the stream, each choice's
`Review` is recorded once:
- its end: as reviewed;
- an upstream failure: as far as it was judged, its error naming the failure;
- the client leaving: the upstream stops, what was read is judged (a review already repairing
  stops at once: its verdict is in), no repair starts, and the records (error "client
  disconnected") are written in the background — nothing may await in a cancelled request;
- the server's shutdown: one unchecked record per choice, error "shutdown"
  (`ConsciencePipeline.until_recorded`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from service.conscience.admission import Reservation
from service.conscience.engine import Enforcement
from service.conscience.outcome import CLIENT_DISCONNECTED, Review
from service.core.backend import JSON

if TYPE_CHECKING:
    from service.conscience.pipeline import CheckContext, ConsciencePipeline


class StreamedChoices:
    def __init__(
        self, pipeline: ConsciencePipeline, context: CheckContext, conversations: list[list[JSON]],
        enforcements: list[Enforcement], *, reserved: Reservation | None,
        close_upstream: Callable[[], Awaitable[None]], upstream_ms: Callable[[], float],
    ) -> None:
        """`enforcements`: one per choice, over that choice's deltas; `close_upstream` stops
        the upstream (every choice's deltas end with what was read); `upstream_ms()`: the
        upstream's time so far, for the records (observed once, when they are written)."""
        self._pipeline = pipeline
        self._context = context
        self._conversations = conversations
        self._enforcements = enforcements
        self._reserved = reserved
        self._close_upstream = close_upstream
        self._upstream_ms = upstream_ms
        self._tasks: list[asyncio.Task[None]] = []
        self.upstream_ms = 0.0

    def outcome(self, index: int) -> Review:
        """Choice `index`'s review so far (complete once the stream has ended)."""
        return self._enforcements[index].outcome

    @property
    def reviews(self) -> list[Review]:
        return [enforcement.outcome for enforcement in self._enforcements]

    async def __aiter__(self) -> AsyncIterator[tuple[int, str]]:
        """Each released piece of text and its choice, as they come. An upstream failure is
        raised once the choices are recorded; ReviewsSaturated (429) before anything ran."""
        pipeline, context = self._pipeline, self._context
        count = len(self._enforcements)
        released: asyncio.Queue[tuple[int, str | Exception | None]] = asyncio.Queue()

        async def run_choice(index: int) -> None:
            try:
                async with contextlib.aclosing(aiter(self._enforcements[index])) as texts:
                    async for text in texts:
                        released.put_nowait((index, text))
            except Exception as exc:  # the upstream failed: the stream ends with it
                released.put_nowait((index, exc))
                return
            released.put_nowait((index, None))

        handed_off = False
        try:
            with pipeline.streaming(count, self._reserved), pipeline.until_recorded(context, count):
                self._tasks = [asyncio.create_task(run_choice(i)) for i in range(count)]
                try:
                    running = count
                    while running:
                        index, item = await released.get()
                        if item is None:
                            running -= 1
                        elif isinstance(item, Exception):
                            raise item
                        else:
                            yield index, item
                except (GeneratorExit, asyncio.CancelledError):
                    if pipeline.shutting_down:  # ended by the shutdown: recorded as such
                        raise
                    handed_off = True
                    pipeline.in_background(self._abandoned(), context.request_id)
                    raise
                finally:
                    if not handed_off:
                        await self._stop(cancel=True)
        except Exception as exc:
            if self._tasks:  # the reviews ran (else the budget refused them): their records say how far
                for review in self.reviews:
                    review.error = review.error or f"upstream failed: {getattr(exc, 'message', exc)}"
                self._record()
            raise
        self._record()

    async def _abandoned(self) -> None:
        """After a client left mid-stream (module docstring)."""
        for enforcement, task in zip(self._enforcements, self._tasks, strict=True):
            enforcement.abandon(CLIENT_DISCONNECTED)
            if enforcement.outcome.flagged_window is not None:
                task.cancel()
        await self._stop(cancel=False)
        self._record()

    async def _stop(self, *, cancel: bool) -> None:
        """End the choices' reviews (cancelled, or left to judge what was read) and the upstream."""
        if cancel:
            for task in self._tasks:
                task.cancel()
        else:
            await self._close_upstream()  # every review's text ends here; each judges what it has
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_upstream()

    def _record(self) -> None:
        self.upstream_ms = self._upstream_ms()
        for index, review in enumerate(self.reviews):
            conversation = self._conversations[index]
            self._pipeline.record(self._context, index, conversation, review, upstream_ms=self.upstream_ms)
