"""Windowed enforce streaming: release an answer's text to the client only once it has passed.

`StreamReview` reads the upstream's text deltas in the background (so generation goes on while
the judge works) and holds back up to one window of text. Each time a window has filled, the
answer so far (everything released plus the held text; with a bounded judge context, the held
text and the last words released before it) is judged, and the held text is released only if
that verdict passes; at the end of the stream the tail is judged the same way. A window
ends at the last whitespace in the held text, so the judge and a repair never see half a word;
when the judge is slower than the generation, the held text has grown past one window by the
time it is free again, and the next window takes all of it (fewer verdicts, never less checked).

When a window is flagged, the upstream is stopped (its iterator closed) and `repair` is called
with the text the client already has: it continues the answer from there, or regenerates it
from the request when nothing was released yet. The continuation is judged window by window in
the same way, always with the answer so far before it; a window of it that fails ends that
attempt, and the next attempt continues from what has been released by then. After
`max_repairs` failed attempts the answer ends with the refusal sentence.

Guarantee: no text that was flagged, and nothing generated after it, is ever yielded. Every
yielded piece is part of an answer-so-far that the judge passed, or (only with `fail_open`, when
the judge itself failed on the original answer) the unjudged rest of it, as the failure policy
says. A judge or repair failure while repairing always refuses: the original is known to be bad.

    review = StreamReview(deltas, window_chars=400, judge=judge, repair=repair,
                          refusal="I can't help with that.", max_repairs=2)
    async for text in review:      # only passed text
        ...
    review.summary                 # windows judged, which was flagged, passed|repaired|refused
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pydantic import BaseModel, Field

ELLIPSIS = "…"  # opens a window judged without the start of its answer
CLIENT_DISCONNECTED = "client disconnected"  # the error of a review whose client left mid-stream
Action = Literal["passed", "repaired", "refused", "unchecked"]
Stage = Literal["answer", "repair"]


class WindowVerdict(Protocol):
    """What the stream review reads of a verdict; `service.conscience.judge.Verdict` is one."""

    @property
    def flagged(self) -> bool: ...

    @property
    def score(self) -> float | None: ...


JudgeFn = Callable[[str], Awaitable[WindowVerdict]]  # the answer so far -> its verdict
RepairFn = Callable[[str, int], AsyncIterator[str]]  # the released text, the attempt (1…) -> continuation deltas
# The released (judged) text -> the part of it a repair continues, and what joins the repair to it.
Continued = Callable[[str], tuple[str, str]]
# A repair's opening -> discard it: True, or why (a string: "refusal", "near_copy"...); falsy keeps it.
DraftFilter = Callable[[str], bool | str | None]


@dataclass(frozen=True, slots=True)
class JudgedWindow:
    """One verdict: on the answer up to `end` (characters of the whole answer as released)."""

    index: int
    stage: Stage
    attempt: int  # 0 for the original answer, then the repair attempt it belongs to
    start: int
    end: int
    flagged: bool
    score: float | None
    ms: float = 0.0  # how long the verdict took (the wait for it holds the window back)


@dataclass(frozen=True, slots=True)
class RejectedDraft:
    attempt: int
    text: str  # what the repair produced in that attempt, released part included
    reason: str  # judge | empty | refusal, or the reason the draft filter gave (near_copy...)
    score: float | None = None


@dataclass(slots=True)
class StreamReviewSummary:
    """What the review did; complete once the iteration has ended."""

    action: Action | None = None  # None while running, or when the upstream failed
    windows: list[JudgedWindow] = field(default_factory=list)
    flagged_window: int | None = None  # index of the original answer's flagged window
    attempts: int = 0
    released: str = ""  # everything yielded, i.e. what the client has
    # Deltas of the answer and its repairs released whole: the tokens the client got, as an
    # upstream streams one token per delta (vLLM); the refusal sentence is not generated.
    released_deltas: int = 0
    rejected: str | None = None  # the upstream's answer as far as it was read, when flagged
    drafts: list[RejectedDraft] = field(default_factory=list)
    error: str | None = None
    judge_ms: float = 0.0
    repair_ms: float = 0.0

    @property
    def scores(self) -> list[float | None]:
        return [window.score for window in self.windows]

    @property
    def score(self) -> float | None:
        """The original answer's worst score (the flagged window's, when one was flagged)."""
        scores = [w.score for w in self.windows if w.stage == "answer" and w.score is not None]
        return max(scores, default=None)

    def wire(self) -> WindowedConscience:
        return WindowedConscience(
            windows=len(self.windows),
            flagged_window=self.flagged_window,
            action=self.action,
            attempts=self.attempts,
            scores=self.scores,
            verdict_ms=[round(window.ms, 1) for window in self.windows],
        )


class WindowedConscience(BaseModel):
    """The stream review as the last chunk's `conscience` object shows it."""

    windows: int = Field(description="Verdicts given, over the answer and its repairs.")
    flagged_window: int | None = Field(None, description="Index of the window that was flagged.")
    action: Action | None = Field(None, description="passed | repaired | refused | unchecked.")
    attempts: int = Field(0, description="Repair attempts made.")
    scores: list[float | None] = Field(default_factory=list, description="Each verdict's score.")
    verdict_ms: list[float] = Field(
        default_factory=list, description="Each verdict's time in milliseconds (its window was held that long)."
    )


class _Reader:
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

    async def wait_for(self, length: int) -> None:
        """Until `length` characters have arrived, or the stream has ended."""
        while len(self.text) < length and not self.done:
            self._changed.clear()
            await self._changed.wait()

    async def stop(self) -> None:
        """Stop reading and close the stream (an upstream response, a generation)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        aclose = getattr(self._deltas, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass(slots=True)
class _Pass:
    """How one windowed pass over a stream ended."""

    stage: Stage
    attempt: int
    offset: int = 0  # characters of the stream released
    flagged: bool = False
    score: float | None = None
    judge_error: Exception | None = None
    discarded: bool = False  # the draft filter rejected the opening
    discard_reason: str | None = None


def _whole_deltas(ends: list[int], offset: int) -> int:
    """How many deltas lie wholly within the first `offset` characters."""
    return bisect.bisect_right(ends, offset)


def window_end(text: str, offset: int, done: bool) -> int:
    """Where the next window ends: the stream's end, or after the held text's last whitespace."""
    if done:
        return len(text)
    # Past the first held character, so that a window is never a lone leading space.
    cut = max(text.rfind(space, offset + 1) for space in " \n\t")
    return cut + 1 if cut > offset else len(text)


class StreamReview:
    def __init__(
        self,
        upstream: AsyncIterator[str],
        *,
        window_chars: int,
        judge: JudgeFn,
        repair: RepairFn,
        refusal: str,
        max_repairs: int,
        fail_open: bool = False,
        reject_draft: DraftFilter | None = None,
        judge_context_chars: int | None = None,
    ) -> None:
        """`upstream`: the answer's text deltas; closed with `aclose()` (when it has one) as
        soon as it is no longer read. `judge(answer_so_far)` and `repair(released_text)` are the
        conscience (the judge may raise: `fail_open` then releases the rest of the original
        unjudged, else the answer is refused; a repair's deltas must append to the released
        text as they are). `reject_draft` sees each repair's first window alone, before the
        judge: True, or a reason, discards the attempt (a repair that refuses, or that copies
        the rejected answer, is no repair). `judge_context_chars`: the judge reads each window
        with at most this much of the text released before it (from a word boundary, marked
        "…"), so that judging costs the answer's length, not its square; None: the whole answer
        so far each time (a latent verdict, whose states the generation has already computed)."""
        if window_chars < 1:
            raise ValueError("the stream review's window must hold at least one character")
        if max_repairs < 0:
            raise ValueError("max_repairs cannot be negative")
        if judge_context_chars is not None and judge_context_chars < 0:
            raise ValueError("the judge's context before a window cannot be negative")
        self._upstream = upstream
        self._window = window_chars
        self._judge = judge
        self._repair = repair
        self._refusal = refusal
        self._max_repairs = max_repairs
        self._fail_open = fail_open
        self._reject_draft = reject_draft
        self._context = judge_context_chars
        self._abandoned = False
        self.summary = StreamReviewSummary()

    def abandon(self, reason: str) -> None:
        """The client has gone: the answer read so far is still judged (so that its record
        says what the judge made of it), but no repair starts — there is nobody to send one to.
        `reason` becomes the summary's error."""
        self._abandoned = True
        self.summary.error = self.summary.error or reason

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def __aiter__(self) -> AsyncIterator[str]:
        return self._run()

    async def _run(self) -> AsyncGenerator[str, None]:
        summary = self.summary
        reader = _Reader(self._upstream)
        outcome = _Pass("answer", 0)
        try:
            async with contextlib.aclosing(self._windowed(reader, outcome)) as windows:
                async for text in windows:
                    yield text
            if outcome.judge_error is not None and self._fail_open:
                summary.action = "unchecked"
                async for text in self._rest(reader, outcome.offset):
                    yield text
                return
        except Exception as exc:  # the upstream failed: nothing unjudged goes out
            summary.error = f"upstream failed: {exc}"
            raise
        finally:
            await reader.stop()
        if not outcome.flagged and outcome.judge_error is None:
            summary.action = "passed"
            return
        if outcome.flagged:
            summary.rejected = reader.text
            summary.flagged_window = summary.windows[-1].index
            if self._abandoned:
                summary.action = "refused"  # withheld: the client saw none of the flagged text
                return
            # Closed explicitly, so that a client leaving mid-repair stops the repair's generation.
            async with contextlib.aclosing(self._repairs()) as repaired:
                async for text in repaired:
                    yield text
            if summary.action == "repaired":
                return
        summary.action = "refused"
        yield self._release(("\n\n" if summary.released else "") + self._refusal)

    async def _repairs(self) -> AsyncGenerator[str, None]:
        """Repair attempts until one passes (action "repaired") or none is left."""
        summary = self.summary
        started = time.perf_counter()
        try:
            for attempt in range(1, self._max_repairs + 1):
                if self._abandoned:
                    return
                summary.attempts = attempt
                reader = _Reader(self._repair(summary.released, attempt))
                outcome = _Pass("repair", attempt)
                try:
                    async with contextlib.aclosing(self._windowed(reader, outcome)) as windows:
                        async for text in windows:
                            yield text
                except Exception as exc:  # the repair's generation failed: refuse
                    summary.error = f"repair failed: {exc}"
                    return
                finally:
                    await reader.stop()
                if outcome.judge_error is not None:
                    summary.error = f"judge failed on a repair: {outcome.judge_error}"
                    return
                if not (outcome.flagged or outcome.discarded):
                    summary.action = "repaired"
                    return
                reason = "judge" if outcome.flagged else (
                    (outcome.discard_reason or "refusal") if reader.text.strip() else "empty"
                )
                summary.drafts.append(RejectedDraft(attempt, reader.text, reason, outcome.score))
        finally:
            summary.repair_ms += (time.perf_counter() - started) * 1000.0

    async def _windowed(self, reader: _Reader, outcome: _Pass) -> AsyncGenerator[str, None]:
        """Yield `reader`'s text window by window while the answer so far passes; stop at the
        first window that does not, or when the judge fails (both noted in `outcome`)."""
        judged = False
        while True:
            await reader.wait_for(outcome.offset + self._window)
            if reader.error is not None:
                raise reader.error
            end = window_end(reader.text, outcome.offset, reader.done)
            segment = reader.text[outcome.offset:end]
            if not segment and (judged or outcome.stage == "repair"):
                # All of it passed already; an empty repair is no repair.
                outcome.discarded = outcome.discarded or not judged
                return
            if outcome.stage == "repair" and not judged and self._reject_draft is not None:
                reason = self._reject_draft(segment)
                if reason:
                    outcome.discarded = True
                    outcome.discard_reason = reason if isinstance(reason, str) else None
                    return
            verdict = await self._judge_window(segment, outcome)
            judged = True
            if verdict is None or verdict.flagged:
                return
            outcome.offset = end
            if segment:  # an empty answer is judged, but there is nothing to send
                summary = self.summary
                summary.released_deltas += _whole_deltas(reader.ends, end) - _whole_deltas(
                    reader.ends, end - len(segment)
                )
                yield self._release(segment)
            if reader.done and end == len(reader.text):
                return

    async def _judge_window(self, segment: str, outcome: _Pass) -> WindowVerdict | None:
        """The verdict on the answer so far with `segment`; None when the judge failed."""
        summary = self.summary
        started = time.perf_counter()
        try:
            verdict = await self._judge(self._judged_text(summary.released, segment))
        except Exception as exc:  # the failure policy decides, in _run
            outcome.judge_error = exc
            summary.error = f"judge failed: {exc}"
            return None
        finally:
            ms = (time.perf_counter() - started) * 1000.0
            summary.judge_ms += ms
        start = len(summary.released)
        summary.windows.append(
            JudgedWindow(
                index=len(summary.windows), stage=outcome.stage, attempt=outcome.attempt,
                start=start, end=start + len(segment), flagged=verdict.flagged, score=verdict.score, ms=ms,
            )
        )
        outcome.flagged, outcome.score = verdict.flagged, verdict.score
        return verdict

    def _judged_text(self, released: str, segment: str) -> str:
        """What the judge reads for a window: the answer so far, or (with a bounded context) its
        last words before the window and the window."""
        if self._context is None or len(released) <= self._context:
            return released + segment
        cut = len(released) - self._context
        space = released.find(" ", cut)
        start = space + 1 if 0 <= space < len(released) - 1 else cut
        return ELLIPSIS + released[start:] + segment

    async def _rest(self, reader: _Reader, offset: int) -> AsyncGenerator[str, None]:
        """fail_open: the rest of the original as it arrives, unjudged."""
        while True:
            await reader.wait_for(offset + 1)
            if reader.error is not None:
                raise reader.error
            if offset >= len(reader.text):
                return
            self.summary.released_deltas += _whole_deltas(reader.ends, len(reader.text)) - _whole_deltas(
                reader.ends, offset
            )
            text, offset = reader.text[offset:], len(reader.text)
            yield self._release(text)

    def _release(self, text: str) -> str:
        self.summary.released += text
        return text
