"""An answer as a stream of text deltas, as the enforcement loop (service/conscience/engine.py)
reads it: the drafts a repair offers (`Draft`, from a `DraftSource`), a stream pulled in the
background (`DeltaReader`), and where a window ends (`window_end`: at a word boundary).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from service.conscience.bounds import BudgetSpent


@dataclass(frozen=True, slots=True)
class Draft:
    """One repair draft: its text deltas (appending to the released text), and whether it is a
    whole candidate (judged in one window, its opening read too) or streamed (windowed)."""

    deltas: AsyncIterator[str]
    whole: bool = False
    question: str | None = None  # reframe: the question it answers in place of the request
    parallel: bool = False  # generated with the attempt's other parallel drafts: raced with them
    # Once its deltas have ended: whether the model ended it (not a token limit); unknown: False.
    ended_by_itself: Callable[[], bool] | None = None
    # A raced draft's text as far as generated -> the text read, judged and sent (a fence the
    # model echoed taken off); None: as it is.
    cleaned: Callable[[str], str] | None = None

    on_accepted: Callable[[], None] | None = None  # called when a raced draft wins

    def read(self, text: str) -> str:
        return self.cleaned(text) if self.cleaned is not None else text


# The released text and the attempt (1, 2, …) -> that attempt's drafts, in order.
DraftSource = Callable[[str, int], AsyncIterator[Draft]]


async def one_chunk(text: str) -> AsyncIterator[str]:
    """`text` as a stream of one delta: how a buffered answer or a candidate is read."""
    yield text


def streamed_drafts(repair: Callable[[str, int], AsyncIterator[str]]) -> DraftSource:
    """A draft source of one streamed draft per attempt: `repair(released, attempt)`'s deltas."""

    async def drafts(released: str, attempt: int) -> AsyncIterator[Draft]:
        yield Draft(repair(released, attempt))

    return drafts


class DeltaReader:
    """Pulls a stream of deltas into `text` in the background until it ends or is stopped."""

    def __init__(self, deltas: AsyncIterator[str]) -> None:
        self._deltas = deltas
        self.text = ""
        self.ends: list[int] = []  # where each delta ends in `text`
        self.done = False
        self.error: Exception | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._pull())

    async def _pull(self) -> None:
        try:
            async for delta in self._deltas:
                self.text += delta
                if delta:
                    self.ends.append(len(self.text))
                self._changed.set()
        except Exception as exc:  # handed to the reviewer, which decides what it means
            self.error = exc
        finally:
            self.done = True
            self._changed.set()

    async def wait_for(self, length: int | None, *, seconds: float | None = None) -> None:
        """Until `length` characters have arrived (None: any number), or the stream has ended;
        BudgetSpent("seconds") after `seconds` (None: no limit)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while (length is None or len(self.text) < length) and not self.done:
            self._changed.clear()
            if deadline is None:
                await self._changed.wait()
                continue
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise BudgetSpent("seconds") from None

    async def stop(self) -> None:
        """Stop reading and close the stream (an upstream response, a generation)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        aclose = getattr(self._deltas, "aclose", None)
        if aclose is not None:
            await aclose()


def whole_deltas(ends: list[int], offset: int) -> int:
    """How many deltas lie wholly within the first `offset` characters."""
    return bisect.bisect_right(ends, offset)


def window_end(text: str, offset: int, done: bool) -> int:
    """Where the next window ends: the stream's end, or after the held text's last whitespace."""
    if done:
        return len(text)
    # Past the first held character, so that a window is never a lone leading space.
    cut = max(text.rfind(space, offset + 1) for space in " \n\t")
    return cut + 1 if cut > offset else len(text)
