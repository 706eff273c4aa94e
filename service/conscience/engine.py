"""The one enforcement loop of the conscience: streaming first.

Design. Every answer is a stream of text deltas; a buffered answer (a non-stream request,
tools, a batch) is a stream of one chunk judged in one unbounded window, as NeMo Guardrails
treats a non-streamed answer. `Enforcement` reads the deltas in the background, holds back up
to one window, judges the answer so far and releases only what passed; a flagged window stops
the upstream and starts the one repair loop: attempt by attempt, a draft source (draft
sources: service/conscience/drafts.py — candidates regenerated or reframed from the request,
or one streamed draft that continues the released text) yields drafts; each is discarded
(empty, a refusal, a copy…), judged window by window like the answer, and the first that
passes is accepted; none left: the refusal sentence. What happened is one `Review`
(service/conscience/outcome.py): windows, drafts, action. Service/conscience/review.py builds
the loop for one answer; the pipeline runs, admits and records it; HTTP only frames its text.

Windows: each time a window has filled, the answer so far (everything released plus the held
text; with a bounded judge context, the held text and the last words released before it) is
judged, and the held text is released only if that verdict passes; at the end of the stream
the tail is judged the same way. A window ends at the last whitespace in the held text, so the
judge and a repair never see half a word; when the judge is slower than the generation, the
held text has grown past one window by the time it is free again, and the next window takes
all of it (fewer verdicts, never less checked).

Guarantee: no text that was flagged, and nothing generated after it, is ever yielded. Every
yielded piece is part of an answer-so-far that the judge passed, or (only with `fail_open`, when
the judge itself failed on the original answer) the unjudged rest of it, as the failure policy
says. A judge or repair failure while repairing always refuses: the original is known to be bad.

    enforcement = Enforcement(deltas, window_chars=400, judge=judge, drafts=streamed_drafts(repair),
                              refusal="I can't help with that.", max_repairs=2)
    async for text in enforcement:      # only passed text
        ...
    enforcement.outcome                 # windows judged, which was flagged, passed|repaired|refused
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from service.conscience.judge import JudgeFailed
from service.conscience.outcome import (
    JUDGE_ERROR,
    JudgedWindow,
    RejectedDraft,
    Review,
    Stage,
    WindowVerdict,
)

ELLIPSIS = "…"  # opens a window judged without the start of its answer

JudgeFn = Callable[[str], Awaitable[WindowVerdict]]  # the answer so far -> its verdict
# A draft's opening and the question it answers (reframe) -> discard it: True, or why (a
# string: "refusal", "near_copy"...); falsy keeps it.
DraftFilter = Callable[[str, "str | None"], "bool | str | None"]


@dataclass(frozen=True, slots=True)
class Draft:
    """One repair draft: its text deltas (appending to the released text), and whether it is a
    whole candidate (judged in one window, its opening read too) or streamed (windowed)."""

    deltas: AsyncIterator[str]
    whole: bool = False
    question: str | None = None  # reframe: the question it answers in place of the request


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

    async def wait_for(self, length: int | None) -> None:
        """Until `length` characters have arrived (None: any number), or the stream has ended."""
        while (length is None or len(self.text) < length) and not self.done:
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


class Enforcement:
    def __init__(
        self,
        upstream: AsyncIterator[str],
        *,
        window_chars: int | None,
        judge: JudgeFn,
        drafts: DraftSource,
        refusal: str,
        max_repairs: int,
        fail_open: bool = False,
        reject_draft: DraftFilter | None = None,
        judge_context_chars: int | None = None,
        judge_draft: JudgeFn | None = None,
    ) -> None:
        """`upstream`: the answer's text deltas; closed with `aclose()` (when it has one) as
        soon as it is no longer read. `window_chars`: None judges the answer in one window once
        it has ended (a buffered answer). `judge(answer_so_far)` and `drafts` are the
        conscience (the judge may raise: `fail_open` then releases the rest of the original
        unjudged, else the answer is refused; a draft's deltas must append to the released
        text as they are); `judge_draft` judges a whole candidate (default: `judge`).
        `reject_draft` sees each draft's first window alone, before the judge: True, or a
        reason, discards the draft (a repair that refuses, or that copies the rejected answer,
        is no repair). `judge_context_chars`: the judge reads each window with at most this
        much of the text released before it (from a word boundary, marked "…"), so that judging
        costs the answer's length, not its square; None: the whole answer so far each time (a
        latent verdict, whose states the generation has already computed)."""
        if window_chars is not None and window_chars < 1:
            raise ValueError("the stream review's window must hold at least one character")
        if max_repairs < 0:
            raise ValueError("max_repairs cannot be negative")
        if judge_context_chars is not None and judge_context_chars < 0:
            raise ValueError("the judge's context before a window cannot be negative")
        self._upstream = upstream
        self._window = window_chars
        self._judge = judge
        self._judge_draft = judge_draft or judge
        self._drafts = drafts
        self._refusal = refusal
        self._max_repairs = max_repairs
        self._fail_open = fail_open
        self._reject_draft = reject_draft
        self._context = judge_context_chars
        self._abandoned = False
        self.outcome = Review()

    def abandon(self, reason: str) -> None:
        """The client has gone: the answer read so far is still judged (so that its record
        says what the judge made of it), but no repair starts — there is nobody to send one to.
        `reason` becomes the outcome's error."""
        self._abandoned = True
        self.outcome.error = self.outcome.error or reason

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def __aiter__(self) -> AsyncIterator[str]:
        return self._run()

    async def run(self) -> Review:
        """Run to the end without a client reading along (a buffered answer); the outcome."""
        async with contextlib.aclosing(self._run()) as texts:
            async for _ in texts:
                pass
        return self.outcome

    async def _run(self) -> AsyncGenerator[str, None]:
        outcome = self.outcome
        reader = _Reader(self._upstream)
        answer = _Pass("answer", 0)
        try:
            async with contextlib.aclosing(self._windowed(reader, answer, self._window)) as windows:
                async for text in windows:
                    yield text
            if answer.judge_error is not None:
                outcome.unchecked_reason = (
                    answer.judge_error.reason if isinstance(answer.judge_error, JudgeFailed) else JUDGE_ERROR
                )
                if self._fail_open:
                    outcome.action = "unchecked"
                    async for text in self._rest(reader, answer.offset):
                        yield text
                    return
        except Exception as exc:  # the upstream failed: nothing unjudged goes out
            outcome.error = f"upstream failed: {exc}"
            raise
        finally:
            await reader.stop()
            outcome.answer = reader.text
        if not answer.flagged and answer.judge_error is None:
            outcome.action = "passed"
            return
        if answer.flagged:
            outcome.flagged_window = outcome.windows[-1].index
            if self._abandoned:
                outcome.action = "refused"  # withheld: the client saw none of the flagged text
                return
            # Closed explicitly, so that a client leaving mid-repair stops the repair's generation.
            async with contextlib.aclosing(self._repairs()) as repaired:
                async for text in repaired:
                    yield text
            if outcome.action == "repaired":
                return
        outcome.action = "refused"
        yield self._release(("\n\n" if outcome.released else "") + self._refusal)

    async def _repairs(self) -> AsyncGenerator[str, None]:
        """The one repair loop: attempt by attempt, the draft source's drafts, each discarded,
        judged and accepted (action "repaired") or rejected, until one passes or none is left."""
        outcome = self.outcome
        started = time.perf_counter()
        try:
            for attempt in range(1, self._max_repairs + 1):
                if self._abandoned:
                    return
                outcome.attempts = attempt
                try:
                    async with contextlib.aclosing(aiter(self._drafts(outcome.released, attempt))) as drafts:
                        async for draft in drafts:
                            if self._abandoned:
                                return
                            tried = _Pass("repair", attempt)
                            async with contextlib.aclosing(self._draft(draft, tried)) as texts:
                                async for text in texts:
                                    yield text
                            if tried.judge_error is not None:
                                outcome.error = f"judge failed on a repair: {tried.judge_error}"
                                return
                            if outcome.action == "repaired":
                                return
                except Exception as exc:  # the repair's generation failed: refuse
                    outcome.error = f"repair failed: {exc}"
                    return
        finally:
            outcome.repair_ms += (time.perf_counter() - started) * 1000.0

    async def _draft(self, draft: Draft, tried: _Pass) -> AsyncGenerator[str, None]:
        """One draft, judged window by window (a whole candidate in one): accepted, or noted
        among the outcome's rejected drafts with its reason."""
        outcome = self.outcome
        reader = _Reader(draft.deltas)
        window = None if draft.whole else self._window
        judge = self._judge_draft if draft.whole else self._judge
        try:
            async with contextlib.aclosing(
                self._windowed(reader, tried, window, judge=judge, question=draft.question)
            ) as windows:
                async for text in windows:
                    yield text
        finally:
            await reader.stop()
        if tried.judge_error is not None:
            return
        if not (tried.flagged or tried.discarded):
            outcome.action, outcome.reframed_question = "repaired", draft.question
            return
        reason = "judge" if tried.flagged else (
            (tried.discard_reason or "refusal") if reader.text.strip() else "empty"
        )
        outcome.drafts.append(RejectedDraft(tried.attempt, reader.text, reason, tried.score, draft.question))

    async def _windowed(
        self, reader: _Reader, pass_: _Pass, window: int | None, *, judge: JudgeFn | None = None,
        question: str | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield `reader`'s text window by window (None: in one, once it has ended) while the
        answer so far passes; stop at the first window that does not, or when the judge fails
        (both noted in `pass_`)."""
        judged = False
        while True:
            await reader.wait_for(pass_.offset + window if window is not None else None)
            if reader.error is not None:
                raise reader.error
            end = window_end(reader.text, pass_.offset, reader.done)
            segment = reader.text[pass_.offset:end]
            if not segment and (judged or pass_.stage == "repair"):
                # All of it passed already; an empty repair is no repair.
                pass_.discarded = pass_.discarded or not judged
                return
            if pass_.stage == "repair" and not judged and self._reject_draft is not None:
                reason = self._reject_draft(segment, question)
                if reason:
                    pass_.discarded = True
                    pass_.discard_reason = reason if isinstance(reason, str) else None
                    return
            verdict = await self._judge_window(segment, pass_, judge or self._judge)
            judged = True
            if verdict is None or verdict.flagged:
                return
            pass_.offset = end
            if segment:  # an empty answer is judged, but there is nothing to send
                self.outcome.released_deltas += _whole_deltas(reader.ends, end) - _whole_deltas(
                    reader.ends, end - len(segment)
                )
                yield self._release(segment)
            if reader.done and end == len(reader.text):
                return

    async def _judge_window(self, segment: str, pass_: _Pass, judge: JudgeFn) -> WindowVerdict | None:
        """The verdict on the answer so far with `segment`; None when the judge failed."""
        outcome = self.outcome
        started = time.perf_counter()
        try:
            verdict = await judge(self._judged_text(outcome.released, segment))
        except Exception as exc:  # the failure policy decides, in _run
            pass_.judge_error = exc
            outcome.error = f"judge failed: {exc}"
            return None
        finally:
            ms = (time.perf_counter() - started) * 1000.0
            outcome.judge_ms += ms
        start = len(outcome.released)
        outcome.windows.append(
            JudgedWindow(
                index=len(outcome.windows), stage=pass_.stage, attempt=pass_.attempt,
                start=start, end=start + len(segment), flagged=verdict.flagged, score=verdict.score, ms=ms,
                verdict=verdict,
            )
        )
        pass_.flagged, pass_.score = verdict.flagged, verdict.score
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
            self.outcome.released_deltas += _whole_deltas(reader.ends, len(reader.text)) - _whole_deltas(
                reader.ends, offset
            )
            text, offset = reader.text[offset:], len(reader.text)
            yield self._release(text)

    def _release(self, text: str) -> str:
        self.outcome.released += text
        return text
