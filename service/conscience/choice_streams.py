"""One streamed generation of n choices, handed out as n separate streams of text deltas.

The repair's k candidate drafts are one batched generation (one `n=k` call: on the embedded
engine one batch, the prompt read once), yet the repair loop judges each draft on its own as it
is generated and stops it on its own (service/conscience/engine.py, `_race`). `split_choices`
reads the chunks once, in the background, and routes each choice's deltas to its stream. A
stream closed by its reader is dropped (the backend is told, when it can stop one choice:
`stop_choice`), and once no choice is read any more the generation itself is closed, so that
the drafts a winner made unnecessary cost nothing further.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable
from typing import Any

JSON = dict[str, Any]
_END = object()


class ChoiceStream:
    """The text deltas of one choice; `finish_reason` once it has ended ("stop", "length")."""

    def __init__(self, split: _Split, index: int) -> None:
        self._split = split
        self.index = index
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.finish_reason: str | None = None
        self.closed = False
        self.deltas = 0  # deltas read: its tokens, as vLLM and the embedded engine stream one per delta
        self._started = False  # a fresh answer starts at its first visible character

    def __aiter__(self) -> ChoiceStream:
        return self

    async def __anext__(self) -> str:
        self._split.start()
        while True:
            item = await self.queue.get()
            if item is _END:
                self.queue.put_nowait(_END)  # stays ended for any later read
                raise StopAsyncIteration
            if isinstance(item, BaseException):
                raise item
            self.deltas += 1
            text = item if self._started else item.lstrip()
            if text:
                self._started = True
                return text

    @property
    def ended_by_itself(self) -> bool:
        """The model ended this choice (not the token limit, not a stop by its reader)."""
        return self.finish_reason == "stop"

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            await self._split.dropped(self)


class _Split:
    def __init__(
        self, chunks: AsyncIterator[JSON], n: int, on_end: Callable[[JSON | None], None],
        context: contextvars.Context | None,
    ) -> None:
        self._chunks = chunks
        self._context = context
        self.streams = [ChoiceStream(self, index) for index in range(n)]
        self._on_end = on_end
        self._task: asyncio.Task[None] | None = None
        self._usage: JSON | None = None
        self._ended = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._pump(), context=self._context)

    async def _pump(self) -> None:
        try:
            async for chunk in self._chunks:
                self._usage = chunk.get("usage") or self._usage
                for choice in chunk.get("choices") or []:
                    index = choice.get("index", 0)
                    if not isinstance(index, int) or not 0 <= index < len(self.streams):
                        continue
                    stream = self.streams[index]
                    text = (choice.get("delta") or {}).get("content")
                    if isinstance(text, str) and text and not stream.closed:
                        stream.queue.put_nowait(text)
                    if choice.get("finish_reason") and stream.finish_reason is None:
                        stream.finish_reason = choice["finish_reason"]
                        stream.queue.put_nowait(_END)
        except Exception as exc:  # every reader sees the failure
            for stream in self.streams:
                stream.queue.put_nowait(exc)
        finally:
            for stream in self.streams:
                stream.queue.put_nowait(_END)
            await self._end()

    async def dropped(self, stream: ChoiceStream) -> None:
        """A reader stopped `stream`: stop its choice upstream where the backend can; with no
        choice read any more, close the generation."""
        stop_choice = getattr(self._chunks, "stop_choice", None)
        if stop_choice is not None and stream.finish_reason is None:
            stop_choice(stream.index)
        if all(other.closed or other.finish_reason for other in self.streams):
            await self.close()

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._end()

    async def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()
        self._on_end(self._usage)


def split_choices(
    chunks: AsyncIterator[JSON], n: int, *, on_end: Callable[[JSON | None], None] = lambda usage: None,
    context: contextvars.Context | None = None,
) -> list[ChoiceStream]:
    """`n` streams over one streamed generation's `chunks` (read once it is first read, in a
    task started in `context` when given: a tracing span's); `on_end(usage)` once it has ended
    or was closed, with the last usage it reported (vLLM's `continuous_usage_stats`: the tokens
    so far)."""
    return _Split(chunks, n, on_end, context).streams
