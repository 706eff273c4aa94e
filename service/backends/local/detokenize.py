"""Incremental detokenisation of one choice, with OpenAI stop strings.

Text is released only when it is final: never half a UTF-8 character (a token may hold part of
one) and never the start of what may turn out to be a stop string, so a streamed answer and a
non-streamed one are the same text.
"""

from __future__ import annotations

from typing import Any


class ChoiceText:
    def __init__(self, tokenizer: Any, stop: tuple[str, ...]) -> None:
        self._tokenizer = tokenizer
        self._stop = stop
        self._ids: list[int] = []
        # Decoding restarts a few tokens back so that byte-level merges across tokens come out right.
        self._prefix_offset = 0
        self._read_offset = 0
        self.text = ""
        self._released = 0
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        """Add a generated token; returns the newly final text (possibly empty)."""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix_offset : self._read_offset])
        after = self._decode(self._ids[self._prefix_offset :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return self._extend(after[len(before) :])

    def finish(self) -> str:
        """The generation ended (end of sequence or length): release everything held back."""
        if not self.stopped:
            before = self._decode(self._ids[self._prefix_offset : self._read_offset])
            after = self._decode(self._ids[self._prefix_offset :])
            self.text += after[len(before) :]
        return self._release(len(self.text))

    def _extend(self, new_text: str) -> str:
        longest_stop = max((len(stop) for stop in self._stop), default=0)
        search_from = max(0, len(self.text) - longest_stop + 1)
        self.text += new_text
        hits = [
            position
            for stop in self._stop
            if (position := self.text.find(stop, search_from)) != -1
        ]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True
            return self._release(len(self.text))
        return self._release(len(self.text) - self._pending_stop_prefix())

    def _pending_stop_prefix(self) -> int:
        """Length of the longest tail of the text that begins some stop string."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def _release(self, upto: int) -> str:
        released = self.text[self._released : upto]
        self._released = max(self._released, upto)
        return released
