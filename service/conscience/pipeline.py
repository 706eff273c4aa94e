"""The conscience step over the answers of one request, per mode, and what gets recorded.

`enforce` awaits the reviews before the client gets an answer; `monitor` schedules them in the
background (the client already has the original); `off` never gets here. Both are bounded
(admission.py): a request is refused with 429 before its answer is generated when its reviews
would find no room. Every reviewed answer, and every monitored one no review had room for,
becomes a `CheckRecord`; every repaired one also a `TripleRecord` (a DPO pair); a blocked one
(no repair passed) keeps its conversation, text and drafts in its `CheckRecord`. A request or
background review the server's shutdown ends before its records are written leaves one
unchecked `CheckRecord` per choice with error "shutdown" (`until_recorded`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from service.conscience import usage
from service.conscience.admission import Reservation, ReviewBudget
from service.conscience.choices import StreamedChoices
from service.conscience.deltas import one_chunk
from service.conscience.drafts import Continued
from service.conscience.outcome import REVIEW_OVERFLOW, UNCHECKED, Review
from service.conscience.review import Reviewer, ReviewPolicy
from service.core.backend import JSON
from service.metrics import Metrics
from service.settings import Mode
from service.shutdown import SHUTDOWN_ERROR, GracefulShutdown
from service.store.records import CheckRecord, Record, TripleRecord

log = logging.getLogger("conscience.pipeline")


class RecordSink(Protocol):
    def submit(self, record: Record) -> None: ...


@dataclass(frozen=True, slots=True)
class CheckContext:
    """Everything about a request that the conscience step and its records need."""

    request_id: str
    endpoint: Literal["chat", "completions", "responses", "check", "moderations"]
    mode: Mode
    policy: ReviewPolicy
    policy_model: str
    api_key_id: str | None = None
    client_request_id: str | None = None  # the client's own id for the request (correlation only)


@dataclass(frozen=True, slots=True)
class Case:
    """One answer to review and the conversation it answers."""

    conversation: list[JSON]
    answer: str


class ConsciencePipeline:
    def __init__(
        self, reviewer: Reviewer, sink: RecordSink, metrics: Metrics, budget: ReviewBudget,
        shutdown: GracefulShutdown | None = None,
    ) -> None:
        """`shutdown`: the server's (None: one that never begins)."""
        self._reviewer = reviewer
        self._sink = sink
        self._metrics = metrics
        self._budget = budget
        self._shutdown = shutdown if shutdown is not None else GracefulShutdown(grace_s=0.0)
        self._background: set[asyncio.Task[None]] = set()
        self._ended_by_shutdown: set[str] = set()  # requests recorded so (nested until_recorded)

    @property
    def refusal_message(self) -> str:
        return self._reviewer.refusal_message

    def admit(self, mode: Mode, count: int) -> Reservation:
        """Before generating: take `count` review slots in `mode` (hand them to `check`,
        `streaming` or `check_later`); ReviewsSaturated (429) when they find no room."""
        return self._budget.reserve(mode, count)

    async def check(
        self, context: CheckContext, cases: list[Case], *, upstream_ms: float = 0.0,
        reserved: Reservation | None = None, repair: bool = True,
    ) -> list[Review]:
        """Review these given answers, each as a one-chunk stream, concurrently; a flagged one
        is repaired (`repair` False: refused at once, its verdict kept); record the outcomes
        and return them in order. Enforce mode's buffered answers come here, and so can any
        caller with a conversation and an answer to judge (nothing is generated but repairs).
        The slots `reserved` at admission are used (and released), and ReviewsSaturated is
        raised when the choices beyond them find no room."""
        with self._budget.running(len(cases), reserved):
            return await self._review(context, cases, upstream_ms, repair=repair)

    async def _review(
        self, context: CheckContext, cases: list[Case], upstream_ms: float, *, repair: bool = True
    ) -> list[Review]:
        reviews = await asyncio.gather(
            *(self._reviewer.review(context.policy, c.conversation, c.answer, repair=repair) for c in cases)
        )
        for index, (case, review) in enumerate(zip(cases, reviews, strict=True)):
            self.record(context, index, case.conversation, review, upstream_ms=upstream_ms)
        return list(reviews)

    def stream_choices(
        self, context: CheckContext, conversations: list[list[JSON]], deltas: list[AsyncIterator[str]], *,
        window_chars: int | None, judge_context_chars: int | None = None,
        continued: list[Continued] | None = None, reserved: Reservation | None = None,
        close_upstream: Callable[[], Awaitable[None]], upstream_ms: Callable[[], float],
    ) -> StreamedChoices:
        """Enforce mode, streamed: every choice's `deltas` through its own enforcement, window
        by window (`window_chars` None: in one window once it has ended, repaired from
        candidates — a buffered answer), in `reserved` running slots; each choice recorded on
        every way the stream ends (service/conscience/choices.py). `continued[i]`: see
        `Reviewer.stream_review`."""
        enforcements = [
            self._reviewer.stream_review(
                context.policy, conversations[i], texts, window_chars=window_chars,
                judge_context_chars=judge_context_chars, continued=continued[i] if continued else None,
            )
            for i, texts in enumerate(deltas)
        ]
        return StreamedChoices(
            self, context, conversations, enforcements, reserved=reserved, close_upstream=close_upstream,
            upstream_ms=upstream_ms,
        )

    async def enforce_whole(
        self, context: CheckContext, conversations: list[list[JSON]], answers: list[str], *,
        reserved: Reservation | None, upstream_ms: float,
    ) -> list[Review]:
        """Enforce mode, buffered: each whole answer (read to its end already) through its
        enforcement as a one-chunk stream, in `stream_choices` (so recorded however the request
        ends); the reviews in order."""
        choices = self.stream_choices(
            context, conversations, [one_chunk(answer) for answer in answers], window_chars=None,
            reserved=reserved, close_upstream=_read_already, upstream_ms=lambda: upstream_ms,
        )
        async for _ in choices:  # one window each: released once, at the end
            pass
        return choices.reviews

    def streaming(self, count: int = 1, reserved: Reservation | None = None) -> AbstractContextManager[None]:
        """Hold `count` running reviews (one per choice, `reserved` ones first) for a whole
        stream (`StreamedChoices`); ReviewsSaturated without room."""
        return self._budget.running(count, reserved)

    def skipped(self, context: CheckContext, count: int) -> None:
        """Mode off: `count` answers went to the client unjudged; the metrics show it."""
        if count:
            self._metrics.unchecked.labels(context.policy.framework.name, "mode_off", "sent").inc(count)

    def review_later(
        self, context: CheckContext, conversations: list[list[JSON]], answers: list[str], *, upstream_ms: float,
        reserved: Reservation | None = None,
    ) -> bool:
        """`check_later` for the `answers` the client was sent, each to its conversation."""
        cases = [Case(conversation, answer) for conversation, answer in zip(conversations, answers, strict=True)]
        return self.check_later(context, cases, upstream_ms=upstream_ms, reserved=reserved)

    def check_later(
        self, context: CheckContext, cases: list[Case], *, upstream_ms: float,
        reserved: Reservation | None = None,
    ) -> bool:
        """Monitor mode: review after the client has its answer, in the slots `reserved` at
        admission (topped up if more choices came back); review failures are only logged.
        False when no review had room (the operator's `monitor_overflow: record_unchecked`):
        each answer is then recorded as unchecked (reason review_overflow) and counted."""
        held = self._budget.pend(len(cases), reserved)
        if held is None:
            log.warning(
                "no room to review %s in the background (%d reviews pending): %d answers "
                "recorded unchecked", context.request_id, self._budget.pending, len(cases),
            )
            for index, case in enumerate(cases):
                unreviewed = Review.unjudged(case.answer, REVIEW_OVERFLOW)
                self.record(context, index, case.conversation, unreviewed, upstream_ms=upstream_ms)
            return False
        task = self.in_background(self._review_later(context, cases, upstream_ms), context.request_id)
        task.add_done_callback(lambda _: held.release())
        return True

    @property
    def shutting_down(self) -> bool:
        """The server's shutdown has begun: a cancelled request is being ended by it."""
        return self._shutdown.began

    def in_background(self, work: Coroutine[Any, Any, None], request_id: str) -> asyncio.Task[None]:
        """Run `work` (a monitor review; a review whose client left, and its records) after its
        request has ended; a failure is logged, and `drain` waits for it at shutdown."""

        async def quietly() -> None:
            try:
                await work
            except Exception:
                log.exception("background review of %s failed", request_id)

        task = asyncio.create_task(quietly())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _review_later(self, context: CheckContext, cases: list[Case], upstream_ms: float) -> None:
        with self.until_recorded(context, len(cases), upstream_ms=upstream_ms):
            await self._review(context, cases, upstream_ms)

    @property
    def pending_reviews(self) -> int:
        return len(self._background)

    async def drain(self, timeout_s: float | None = None) -> None:
        """Shutdown: let monitor-mode reviews finish so their records reach the writer, for at
        most `timeout_s` (None: however long they take); those still running then are
        cancelled, and recorded as ended by the shutdown (`until_recorded`)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while self._background:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            _, running = await asyncio.wait(set(self._background), timeout=left)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    @contextmanager
    def request_scope(self, context: CheckContext, count: int) -> Iterator[None]:
        """Around one request of `count` choices: the conscience's tokens counted from its start
        (service/conscience/usage.py, for its `conscience.usage` and the metrics), and its
        records kept until written (`until_recorded`)."""
        with self.until_recorded(context, count):
            usage.begin(context.policy.framework.name, self._metrics.stage_tokens)
            yield

    @contextmanager
    def until_recorded(self, context: CheckContext, count: int, *, upstream_ms: float = 0.0) -> Iterator[None]:
        """Around the part of a request (or a background review) before its records are
        written: cancelled there by the server's shutdown, it writes `count` unchecked records
        (one per choice) with error "shutdown" instead, so that no request ends unrecorded.
        A cancellation before the shutdown (a client gone from a stream) records nothing, nor
        does mode off, which records nothing anyway."""
        try:
            yield
        except asyncio.CancelledError:
            ended = self._shutdown.began and context.mode is not Mode.OFF
            if ended and context.request_id not in self._ended_by_shutdown:
                self._ended_by_shutdown.add(context.request_id)
                self._record_shutdown(context, count, upstream_ms)
            raise

    def _record_shutdown(self, context: CheckContext, count: int, upstream_ms: float) -> None:
        log.warning("%s: ended by the shutdown before its review; recorded unchecked", context.request_id)
        for index in range(count):
            ended = Review.unjudged("", SHUTDOWN_ERROR, refused=True, error=SHUTDOWN_ERROR)
            self.record(context, index, [], ended, upstream_ms=upstream_ms)

    def record(
        self, context: CheckContext, index: int, conversation: list[JSON], review: Review, *, upstream_ms: float
    ) -> None:
        """Record choice `index`'s review (`conversation`: what it answers): its check, and
        its triple when it was repaired. A repaired or blocked check keeps the conversation,
        the answer and the discarded drafts, so that each is reviewable on its own."""
        framework = context.policy.framework.name
        if log.isEnabledFor(logging.DEBUG):  # prompts and answers never at INFO (invariant 5)
            log.debug(
                "choice %d: verdict %s (score %s) for answer %r; returned %r",
                index, review.verdict, review.score, review.answer, review.final_text,
            )
        self._metrics.verdicts.labels(framework, review.verdict).inc()
        if review.unchecked_reason is not None:
            # In monitor mode the client already has the original, whatever the review says.
            refused = review.refused and context.mode is Mode.ENFORCE
            outcome = "refused" if refused else "sent"
            self._metrics.unchecked.labels(framework, review.unchecked_reason, outcome).inc()
        self._metrics.stage_seconds.labels("judge").observe(review.judge_ms / 1000.0)
        if review.attempts:
            self._metrics.stage_seconds.labels("repair").observe(review.repair_ms / 1000.0)
            outcome = "repaired" if review.repaired else "refused"
            self._metrics.repairs.labels(framework, outcome).inc()
        for result, count in review.topic_checks.items():
            self._metrics.topic_checks.labels(framework, result).inc(count)
        check = CheckRecord(
            request_id=context.request_id,
            client_request_id=context.client_request_id,
            endpoint=context.endpoint,
            framework=framework,
            mode=context.mode.value,
            verdict=review.verdict,
            score=review.score,
            repaired=review.repaired,
            attempts=review.attempts,
            policy_model=context.policy_model,
            judge_model=context.policy.judge_model,
            upstream_ms=upstream_ms,
            judge_ms=review.judge_ms,
            repair_ms=review.repair_ms,
            choice_index=index,
            api_key_id=context.api_key_id,
            error=review.error,
            threshold=None if review.verdict == UNCHECKED else review.threshold,
        )
        if review.attempts:  # flagged and repaired or blocked: the check keeps the case
            check.prompt, check.answer = conversation, review.answer
            check.drafts = review.rejected_drafts
        self._sink.submit(check)
        if review.repaired and review.original is not None and review.accepted is not None:
            self._sink.submit(
                TripleRecord(
                    request_id=context.request_id,
                    client_request_id=context.client_request_id,
                    check_id=check.id,
                    framework=framework,
                    prompt=conversation,
                    rejected=review.answer,
                    chosen=review.final_text,
                    details={
                        "rejected_verdict": {"label": review.original.label, "score": review.original.score},
                        "chosen_verdict": {"label": review.accepted.label, "score": review.accepted.score},
                        "attempts": review.attempts,
                        "discarded_drafts": review.rejected_drafts,
                        "judge_style": context.policy.style.value,
                    } | ({"reframed_question": review.reframed_question} if review.reframed_question else {}),
                    policy_model=context.policy_model,
                    judge_model=context.policy.judge_model,
                )
            )


async def _read_already() -> None:
    """A whole answer's upstream: read to its end already."""
