"""Windowed enforce streaming over HTTP: the chunks of an upstream stream as the text deltas
that `service/conscience/stream_review.py` reviews, and the chunks the client gets back.

`StreamTap` reads the upstream's chunks (the first ones already fetched, so that an upstream
failure was still an HTTP error) and yields the text of its one choice, noting on the way what
the answer's last chunks need: the head (id, created, model), the finish reason and the usage
chunk. A delta that is not plain text (reasoning, a refusal, a tool call) that turns up after
the text has started is withheld: the client gets only text the judge has passed. Whether a
stream is windowed at all, and falling back to buffering, is `checked_serving.py`'s choice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from service.backends.base import JSON

_HEAD_FIELDS = ("id", "created", "model", "system_fingerprint")


class DeltaText(Protocol):
    def delta_text(self, chunk_choice: JSON) -> str | None: ...


class StreamTap:
    def __init__(self, surface: DeltaText, fetched: list[JSON], rest: AsyncIterator[JSON]) -> None:
        self._surface = surface
        self._fetched = fetched
        self._rest = rest
        self.head: JSON = {}
        self.finish_reason: str | None = None
        self.usage: JSON | None = None
        self.withheld = 0  # deltas that were not plain text, not sent

    @staticmethod
    async def prefetch(surface: DeltaText, chunks: AsyncIterator[JSON]) -> tuple[list[JSON], bool]:
        """The chunks up to the first one with something in it (text or more), and whether that
        is plain text: a stream that opens with reasoning or a call is buffered instead."""
        fetched: list[JSON] = []
        async for chunk in chunks:
            fetched.append(chunk)
            for choice in chunk.get("choices") or []:
                text = surface.delta_text(choice)
                if text is None:
                    return fetched, False
                if text:
                    return fetched, True
        return fetched, True

    async def texts(self) -> AsyncIterator[str]:
        """The answer's text deltas; closing this closes the upstream stream."""
        try:
            for chunk in self._fetched:
                for text in self._read(chunk):
                    yield text
            self._fetched = []
            async for chunk in self._rest:
                for text in self._read(chunk):
                    yield text
        finally:
            aclose = getattr(self._rest, "aclose", None)
            if aclose is not None:
                await aclose()

    def _read(self, chunk: JSON) -> list[str]:
        if not self.head:
            self.head = {k: chunk[k] for k in _HEAD_FIELDS if k in chunk}
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        texts = []
        for choice in chunk.get("choices") or []:
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            text = self._surface.delta_text(choice)
            if text is None:
                self.withheld += 1
            elif text:
                texts.append(text)
        return texts
