"""Windowed enforce streaming over HTTP: the chunks of an upstream stream as the text deltas
that the enforcement loop (`service/conscience/engine.py`) reviews, and the chunks the client gets back.

`StreamTap` reads the upstream's chunks (the first ones already fetched, so that an upstream
failure was still an HTTP error) in the background and hands each choice's deltas to that
choice's review (`texts(index)`: n > 1 gives one window sequence per choice), noting on the way
what the answer's last chunks need: the head (id, created, model), each choice's finish reason
and the usage. The upstream is closed once every choice's review has stopped reading it.

What a choice's review judges is the answer as the non-stream judge reads it
(`service/api/chat_completion/serving.py`): a chat answer's reasoning (`reasoning_content`, or
`reasoning`) as "[reasoning] ..." and then, on a line of its own, the content. `released` maps
the judged text a review releases back to the delta fields it came from (the "[reasoning] "
label and the line break are the judge's only, never sent), and `continued` tells a repair what
it continues: the released content, or, when the release ended inside the reasoning, a new
answer after it. A delta that is neither text nor reasoning (a refusal, a tool call), or
reasoning after the content has begun, is withheld: the client gets only what the judge has
passed. Whether a stream is windowed at all, and falling back to buffering, is
`checked_serving.py`'s choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from service.core.backend import JSON

_HEAD_FIELDS = ("id", "created", "model", "system_fingerprint")
_REASONING_FIELDS = ("reasoning_content", "reasoning")  # as the chat surface reads them
REASONING_LABEL = "[reasoning] "  # how the judge reads a reasoning (chat surface's rendering)
_END = math.inf


class DeltaText(Protocol):
    def delta_text(self, chunk_choice: JSON) -> str | None: ...
    def text_chunk(self, head: JSON, index: int, text: str, finish_reason: str | None) -> JSON: ...


def _reasoning(chunk_choice: JSON) -> tuple[str, str] | None:
    """A chat delta's reasoning (its field, its text), read once when sent under both names."""
    delta = chunk_choice.get("delta")
    if not isinstance(delta, dict):
        return None
    for key in _REASONING_FIELDS:
        if isinstance(delta.get(key), str) and delta[key]:
            return key, delta[key]
    return None


def _without_reasoning(chunk_choice: JSON) -> JSON:
    delta = {k: v for k, v in (chunk_choice.get("delta") or {}).items() if k not in _REASONING_FIELDS}
    return {**chunk_choice, "delta": delta}


@dataclass(slots=True)
class _Choice:
    """One choice's stream, in the judge's rendering: where its reasoning and content begin."""

    queue: asyncio.Queue[str | Exception | None] = field(default_factory=asyncio.Queue)
    finish_reason: str | None = None
    reasoning_field: str = "reasoning_content"
    reasoning_start: int | None = None  # judged-text offset of the reasoning (None: none)
    content_start: int | None = None  # judged-text offset of the content (None: not yet)
    rendered: int = 0  # judged text queued for the review
    mapped: int = 0  # judged text released and mapped back to chunks
    closed: bool = False

    def spans(self) -> list[tuple[str, float, float]]:
        """(field, start, end) of the judged text's parts that the client gets."""
        if self.reasoning_start is None:
            return [("content", self.content_start or 0, _END)]
        spans: list[tuple[str, float, float]] = []
        reasoning_end = _END if self.content_start is None else self.content_start - 1
        spans.append((self.reasoning_field, self.reasoning_start, reasoning_end))
        if self.content_start is not None:
            spans.append(("content", self.content_start, _END))
        return spans


class StreamTap:
    def __init__(
        self, surface: DeltaText, fetched: list[JSON], rest: AsyncIterator[JSON], choices: int = 1
    ) -> None:
        self._surface = surface
        self._fetched = fetched
        self._rest = rest
        self._choices = [_Choice() for _ in range(choices)]
        self._pump: asyncio.Task[None] | None = None
        self._closed = False
        self.head: JSON = {}
        self.usage: JSON | None = None  # the last usage the upstream reported
        self.withheld = 0  # deltas that were neither text nor reasoning, not sent

    @property
    def choice_count(self) -> int:
        return len(self._choices)

    def finish_reason(self, index: int) -> str | None:
        return self._choices[index].finish_reason

    @staticmethod
    async def prefetch(surface: DeltaText, chunks: AsyncIterator[JSON]) -> tuple[list[JSON], bool]:
        """The chunks up to the first one with something in it (text, reasoning or more), and
        whether that is text or reasoning: a stream that opens with a call is buffered instead."""
        fetched: list[JSON] = []
        async for chunk in chunks:
            fetched.append(chunk)
            for choice in chunk.get("choices") or []:
                if _reasoning(choice) is not None:
                    return fetched, True
                text = surface.delta_text(choice)
                if text is None:
                    return fetched, False
                if text:
                    return fetched, True
        return fetched, True

    async def texts(self, index: int = 0) -> AsyncIterator[str]:
        """Choice `index`'s judged text deltas; once every choice's are closed, so is the upstream."""
        choice = self._choices[index]
        if self._pump is None:
            self._pump = asyncio.create_task(self._read_all())
        try:
            while True:
                item = await choice.queue.get()
                if item is None:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            choice.closed = True
            if all(c.closed for c in self._choices):
                await self.close()

    async def close(self) -> None:
        """Stop reading the upstream and close its stream; every choice's `texts` ends with
        what was read so far."""
        if self._closed:
            return
        self._closed = True
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            for choice in self._choices:
                choice.queue.put_nowait(None)
        aclose = getattr(self._rest, "aclose", None)
        if aclose is not None:
            await aclose()

    async def _read_all(self) -> None:
        end: Exception | None = None
        try:
            for chunk in self._fetched:
                self._read(chunk)
            self._fetched = []
            async for chunk in self._rest:
                self._read(chunk)
        except Exception as exc:  # handed to every review, which decides what it means
            end = exc
        for choice in self._choices:
            choice.queue.put_nowait(end)

    def _read(self, chunk: JSON) -> None:
        if not self.head:
            self.head = {k: chunk[k] for k in _HEAD_FIELDS if k in chunk}
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for chunk_choice in chunk.get("choices") or []:
            index = chunk_choice.get("index", 0)
            if not isinstance(index, int) or not 0 <= index < len(self._choices):
                continue
            choice = self._choices[index]
            if chunk_choice.get("finish_reason"):
                choice.finish_reason = chunk_choice["finish_reason"]
            judged = self._judged(choice, chunk_choice)
            if judged:
                choice.rendered += len(judged)
                choice.queue.put_nowait(judged)

    def _judged(self, choice: _Choice, chunk_choice: JSON) -> str:
        """The delta as the judge reads it, appended to the choice's judged text so far."""
        reasoning = _reasoning(chunk_choice)
        text = self._surface.delta_text(_without_reasoning(chunk_choice) if reasoning else chunk_choice)
        if text is None:
            self.withheld += 1
            text = ""
        judged = ""
        if reasoning is not None:
            if choice.content_start is not None:  # reasoning after the content: not in order
                self.withheld += 1
            else:
                if choice.reasoning_start is None:
                    choice.reasoning_field = reasoning[0]
                    choice.reasoning_start = choice.rendered + len(REASONING_LABEL)
                    judged = REASONING_LABEL
                judged += reasoning[1]
        if text:
            if choice.content_start is None:
                if choice.reasoning_start is not None:
                    judged += "\n"
                choice.content_start = choice.rendered + len(judged)
            judged += text
        return judged

    def released(self, index: int, text: str) -> list[JSON]:
        """The chunks that send `text`, the next piece of judged text choice `index` released."""
        choice = self._choices[index]
        start, end = choice.mapped, choice.mapped + len(text)
        choice.mapped = end
        chunks = []
        for name, low, high in choice.spans():
            a, b = max(start, low), min(end, high)
            if a >= b:
                continue
            piece = text[int(a) - start:int(b) - start]
            chunk = self._surface.text_chunk(self.head, index, piece, None)
            if name != "content":
                chunk["choices"][0]["delta"] = {"role": "assistant", name: piece}
            chunks.append(chunk)
        return chunks

    def continued(self, index: int, released: str) -> tuple[str, str]:
        """What a repair of choice `index` continues of the `released` judged text, and the
        text that joins the repair's deltas to it: the released content as it is; nothing, after
        a reasoning, which stays, and what follows is the content."""
        choice = self._choices[index]
        if not released:
            choice.reasoning_start, choice.content_start = None, 0
            return "", ""
        if choice.reasoning_start is None:
            return released[choice.content_start or 0:], ""
        if choice.content_start is not None and choice.content_start <= len(released):
            return released[choice.content_start:], ""
        choice.content_start = len(released) + 1
        return "", "\n"
