"""The one enforcement loop of the conscience: streaming first.

Design. Every answer is a stream of text deltas; a buffered answer (a non-stream request,
tools, a batch) is a stream of one chunk judged in one unbounded window, as NeMo Guardrails
treats a non-streamed answer. `Enforcement` reads the deltas in the background, holds back up
to one window, judges the answer so far and releases only what passed; a flagged window stops
the upstream and starts the one repair loop: attempt by attempt, a draft source (draft
sources: service/conscience/drafts.py — candidates regenerated or reframed from the request,
or one streamed draft that continues the released text) yields drafts; each is discarded
(empty, a refusal, a copy…), judged window by window like the answer, and the first that
passes is accepted; none left: the refusal sentence. Drafts generated together (one `n=k`
call: `Draft.parallel`) are raced instead: each judged as it is generated, a flagged or
degenerate one stopped at once, the first that ends clean accepted and the others stopped. The
answer's `RepairBudget` (tokens, seconds) bounds the loop: spent, it ends with the refusal.
What happened is one `Review` (service/conscience/outcome.py): windows, drafts, action.
Service/conscience/review.py builds the loop for one answer; the pipeline runs, admits and
records it; HTTP only frames its text.

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
import contextlib
import inspect
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from service.conscience.bounds import REPAIR_BUDGET_SPENT, BudgetSpent, RepairBudget
from service.conscience.deltas import DeltaReader, Draft, DraftSource, whole_deltas, window_end
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
# string: "refusal", "near_copy", "off_topic"...); falsy keeps it. May be awaitable (a check that
# asks the backend: the topic check's embeddings).
DraftFilter = Callable[[str, "str | None"], "bool | str | None | Awaitable[bool | str | None]"]
# A draft's text so far and whether the model ended it by itself -> why it is degenerate
# ("loop", "trails_off": service/conscience/degenerate.py), or None.
DegenerateCheck = Callable[[str, bool], "str | None"]


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
        degenerate: DegenerateCheck | None = None,
        budget: RepairBudget | None = None,
        draft_window_chars: int | None = None,
        judge_draft_windows: bool = True,
        topic_checks: dict[str, int] | None = None,
    ) -> None:
        """`upstream`: the answer's text deltas; closed with `aclose()` (when it has one) as
        soon as it is no longer read. `window_chars`: None judges the answer in one window once
        it has ended (a buffered answer). `judge(answer_so_far)` and `drafts` are the
        conscience (the judge may raise: `fail_open` then releases the rest of the original
        unjudged, else the answer is refused; a draft's deltas must append to the released
        text as they are); `judge_draft` judges a whole candidate (default: `judge`).
        `reject_draft` sees each draft's first window alone, before the judge (awaited when it
        returns an awaitable: the topic check asks the backend): True, or a reason, discards the
        draft (a repair that refuses, or that copies the rejected answer,
        is no repair). `judge_context_chars`: the judge reads each window with at most this
        much of the text released before it (from a word boundary, marked "…"), so that judging
        costs the answer's length, not its square; None: the whole answer so far each time (a
        latent verdict, whose states the generation has already computed). `degenerate` reads
        each draft window by window (a loop) and whole once it has ended (also trailing off):
        a reason discards it. `budget`: the repair loop's tokens and seconds (None: unbounded).
        `draft_window_chars`: how much of a raced draft is generated between its checks (None:
        `window_chars`, and with that None too, one check once it has ended); each checks it for
        degeneration and, with `judge_draft_windows` (a cheap verdict: the latent one, read from
        the states its generation recorded), judges it; else it is judged once it has ended.
        `topic_checks`: where `reject_draft` counts its topic checks (the outcome's)."""
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
        self._degenerate = degenerate
        self._budget = budget
        self._draft_window = draft_window_chars if draft_window_chars is not None else window_chars
        self._judge_draft_windows = judge_draft_windows
        self._final_verdicts = asyncio.Lock()
        self._race_won = False  # a raced draft has passed: the others are not judged any more
        self._abandoned = False
        self.outcome = Review()
        if topic_checks is not None:
            self.outcome.topic_checks = topic_checks

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
        reader = DeltaReader(self._upstream)
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
        judged and accepted (action "repaired") or rejected, until one passes, none is left or
        the budget is spent."""
        outcome = self.outcome
        started = time.perf_counter()
        if self._budget is not None:
            self._budget.start()
        try:
            for attempt in range(1, self._max_repairs + 1):
                if self._abandoned:
                    return
                if self._budget is not None and (spent := self._budget.spent()):
                    outcome.error = f"{REPAIR_BUDGET_SPENT}: {spent}"
                    return
                outcome.attempts = attempt
                try:
                    async with contextlib.aclosing(aiter(self._drafts(outcome.released, attempt))) as drafts:
                        async with contextlib.aclosing(self._attempt(drafts, attempt)) as texts:
                            async for text in texts:
                                yield text
                    if outcome.action == "repaired" or outcome.error is not None or self._abandoned:
                        return
                except BudgetSpent as spent:
                    outcome.error = f"{REPAIR_BUDGET_SPENT}: {spent}"
                    return
                except _RepairJudgeFailed as failed:
                    outcome.error = f"judge failed on a repair: {failed.__cause__}"
                    return
                except Exception as exc:  # the repair's generation failed: refuse
                    outcome.error = f"repair failed: {exc}"
                    return
        finally:
            outcome.repair_ms += (time.perf_counter() - started) * 1000.0

    async def _attempt(self, drafts: AsyncIterator[Draft], attempt: int) -> AsyncGenerator[str, None]:
        """One attempt's drafts: raced when they are generated together (the first is
        `parallel`), else each discarded, judged and accepted or rejected in turn."""
        async with contextlib.aclosing(self._in_time(drafts)) as in_time, \
                contextlib.aclosing(self._drafts_of(in_time, attempt)) as texts:
            async for text in texts:
                yield text

    async def _drafts_of(self, in_time: AsyncIterator[Draft], attempt: int) -> AsyncGenerator[str, None]:
        first = await anext(in_time, None)
        if first is None:
            return
        if first.parallel:
            async with contextlib.aclosing(self._race(first, in_time, attempt)) as texts:
                async for text in texts:
                    yield text
            return
        draft: Draft | None = first
        while draft is not None:
            if self._abandoned:
                return
            tried = _Pass("repair", attempt)
            async with contextlib.aclosing(self._draft(draft, tried)) as texts:
                async for text in texts:
                    yield text
            if tried.judge_error is not None:
                self.outcome.error = f"judge failed on a repair: {tried.judge_error}"
                return
            if self.outcome.action == "repaired":
                return
            draft = await anext(in_time, None)

    def _seconds_left(self) -> float | None:
        return None if self._budget is None else self._budget.seconds_left()

    async def _in_time(self, drafts: AsyncIterator[Draft]) -> AsyncIterator[Draft]:
        """`drafts`, each awaited within the budget's seconds (a candidates call is awaited there)."""
        while True:
            seconds = self._seconds_left()
            try:
                draft = await (anext(drafts) if seconds is None else asyncio.wait_for(anext(drafts), seconds))
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise BudgetSpent("seconds") from None
            yield draft

    async def _race(self, first: Draft, rest: AsyncIterator[Draft], attempt: int) -> AsyncGenerator[str, None]:
        """Drafts generated together, each judged as it is generated, from the moment it
        arrives: the first that ends clean is accepted (released whole) and the others are
        stopped; flagged or discarded ones are noted with their reasons as they stop."""
        self._race_won = False
        raced = [first]
        contenders = {asyncio.create_task(self._contend(first, attempt))}

        async def feed() -> None:
            async for draft in rest:
                raced.append(draft)
                contenders.add(asyncio.create_task(self._contend(draft, attempt)))

        feeder = asyncio.create_task(feed())
        winner: tuple[Draft, str, JudgedWindow] | None = None
        try:
            while winner is None:
                running = contenders | (set() if feeder.done() else {feeder})
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is feeder:
                        task.result()  # a failed source (a candidates call, the budget) ends the attempt
                        continue
                    contenders.discard(task)
                    winner = winner or task.result()
        finally:
            for task in (feeder, *contenders):
                task.cancel()
            await asyncio.gather(feeder, *contenders, return_exceptions=True)
            for draft in raced:  # a contender cancelled before it began never closed its draft
                aclose = getattr(draft.deltas, "aclose", None)
                if aclose is not None:
                    await aclose()
        if winner is None:
            return
        draft, text, window = winner
        if draft.on_accepted is not None:
            draft.on_accepted()
        outcome = self.outcome
        outcome.windows.append(window)
        outcome.action, outcome.reframed_question = "repaired", draft.question
        outcome.released_deltas += 1
        yield self._release(text)

    async def _contend(self, draft: Draft, attempt: int) -> tuple[Draft, str, JudgedWindow] | None:
        """One raced draft, read and judged window by window as it is generated: (the draft,
        its text, its last verdict's window) once it has ended clean; None when it was discarded
        or flagged (noted among the outcome's drafts), stopping it at once."""
        reader = DeltaReader(draft.deltas)
        offset, opened = 0, False
        try:
            while True:
                await reader.wait_for(
                    offset + self._draft_window if self._draft_window is not None else None,
                    seconds=self._seconds_left(),
                )
                if reader.error is not None:
                    raise reader.error
                end = window_end(reader.text, offset, reader.done)
                text = draft.read(reader.text[:end])
                ended = reader.done and end == len(reader.text)
                reason = await self._discarded(text, draft, opened=opened, ended=ended)
                if reason is not None:
                    self.outcome.drafts.append(
                        RejectedDraft(attempt, draft.read(reader.text), reason, None, draft.question)
                    )
                    return None
                opened = True
                if not (ended or self._judge_draft_windows):
                    offset = end
                    continue
                if ended:
                    # One ended draft judged at a time: once one passes, the others are stopped
                    # unjudged (with a remote judge, each verdict is a call).
                    async with self._final_verdicts:
                        if self._race_won:
                            return None  # stopped unjudged
                        window = await self._judge_raced(text, attempt)
                        self._race_won = not window.flagged
                else:
                    window = await self._judge_raced(text, attempt)
                if window.flagged or ended:
                    if window.flagged:
                        self.outcome.windows.append(window)
                        self.outcome.drafts.append(
                            RejectedDraft(attempt, draft.read(reader.text), "judge", window.score, draft.question)
                        )
                        return None
                    return draft, text, window
                self.outcome.windows.append(window)
                offset = end
        finally:
            await reader.stop()

    async def _discarded(self, text: str, draft: Draft, *, opened: bool, ended: bool) -> str | None:
        """Why a raced draft's text so far is no repair (its opening filtered once), or None."""
        if not text.strip():
            return "empty" if ended else None
        if not opened:
            reason = await self._rejected(text, draft.question)
            if reason:
                return reason if isinstance(reason, str) else "refusal"
        if self._degenerate is not None:
            by_itself = ended and draft.ended_by_itself is not None and draft.ended_by_itself()
            return self._degenerate(text, by_itself)
        return None

    async def _rejected(self, opening: str, question: str | None) -> bool | str | None:
        """The draft filter's word on a draft's opening (awaited when it asks the backend)."""
        if self._reject_draft is None:
            return None
        reason = self._reject_draft(opening, question)
        return await reason if inspect.isawaitable(reason) else reason

    async def _judge_raced(self, text: str, attempt: int) -> JudgedWindow:
        """The verdict on a raced draft's text so far (its opening read too), as a window of
        this answer; _RepairJudgeFailed when the judge failed."""
        started = time.perf_counter()
        try:
            verdict = await self._judge_draft(self._judged_text(self.outcome.released, text))
        except Exception as exc:
            raise _RepairJudgeFailed() from exc
        finally:
            ms = (time.perf_counter() - started) * 1000.0
            self.outcome.judge_ms += ms
        start = len(self.outcome.released)
        return JudgedWindow(
            index=len(self.outcome.windows), stage="repair", attempt=attempt, start=start, end=start + len(text),
            flagged=verdict.flagged, score=verdict.score, ms=ms, verdict=verdict,
        )

    async def _draft(self, draft: Draft, tried: _Pass) -> AsyncGenerator[str, None]:
        """One draft, judged window by window (a whole candidate in one): accepted, or noted
        among the outcome's rejected drafts with its reason."""
        outcome = self.outcome
        reader = DeltaReader(draft.deltas)
        window = None if draft.whole else self._window
        judge = self._judge_draft if draft.whole else self._judge
        try:
            async with contextlib.aclosing(
                self._windowed(reader, tried, window, judge=judge, draft=draft)
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
        self, reader: DeltaReader, pass_: _Pass, window: int | None, *, judge: JudgeFn | None = None,
        draft: Draft | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield `reader`'s text window by window (None: in one, once it has ended) while the
        answer so far passes; stop at the first window that does not, or when the judge fails
        (both noted in `pass_`). A `draft`'s windows are read within the budget's seconds, its
        opening filtered and each window checked for degeneration before the judge."""
        judged = False
        question = draft.question if draft is not None else None
        while True:
            await reader.wait_for(
                pass_.offset + window if window is not None else None,
                seconds=self._seconds_left() if pass_.stage == "repair" else None,
            )
            if reader.error is not None:
                raise reader.error
            end = window_end(reader.text, pass_.offset, reader.done)
            segment = reader.text[pass_.offset:end]
            if not segment and (judged or pass_.stage == "repair"):
                # All of it passed already; an empty repair is no repair.
                pass_.discarded = pass_.discarded or not judged
                return
            if pass_.stage == "repair" and not judged:
                reason = await self._rejected(segment, question)
                if reason:
                    pass_.discarded = True
                    pass_.discard_reason = reason if isinstance(reason, str) else None
                    return
            if draft is not None and self._degenerate is not None:
                ended = reader.done and end == len(reader.text)
                by_itself = ended and draft.ended_by_itself is not None and draft.ended_by_itself()
                reason = self._degenerate(reader.text[:end], by_itself)
                if reason:
                    pass_.discarded, pass_.discard_reason = True, reason
                    return
            verdict = await self._judge_window(segment, pass_, judge or self._judge)
            judged = True
            if verdict is None or verdict.flagged:
                return
            pass_.offset = end
            if segment:  # an empty answer is judged, but there is nothing to send
                self.outcome.released_deltas += whole_deltas(reader.ends, end) - whole_deltas(
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

    async def _rest(self, reader: DeltaReader, offset: int) -> AsyncGenerator[str, None]:
        """fail_open: the rest of the original as it arrives, unjudged."""
        while True:
            await reader.wait_for(offset + 1)
            if reader.error is not None:
                raise reader.error
            if offset >= len(reader.text):
                return
            self.outcome.released_deltas += whole_deltas(reader.ends, len(reader.text)) - whole_deltas(
                reader.ends, offset
            )
            text, offset = reader.text[offset:], len(reader.text)
            yield self._release(text)

    def _release(self, text: str) -> str:
        self.outcome.released += text
        return text


class _RepairJudgeFailed(Exception):
    """The judge failed on a raced draft (its cause): the repair refuses."""

