"""The conscience step over the answers of one request, per mode, and what gets recorded.

`enforce` awaits the reviews before the client gets an answer; `monitor` schedules them in the
background (the client already has the original); `off` never gets here. Both are bounded
(admission.py): a request is refused with 429 before its answer is generated when its reviews
would find no room. Every reviewed answer
becomes a `CheckRecord`; every repaired one also a `TripleRecord` (a DPO pair); a blocked one
(no repair passed) keeps its conversation, text and drafts in its `CheckRecord`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

from service.backends.base import JSON
from service.conscience.admission import ReviewBudget
from service.conscience.judge import ETHICAL, UNETHICAL, Verdict
from service.conscience.review import JUDGE_ERROR, UNCHECKED, Review, Reviewer, ReviewPolicy
from service.conscience.stream_review import Continued, StreamReview, StreamReviewSummary
from service.metrics import Metrics
from service.settings import Mode
from service.store.records import CheckRecord, Record, TripleRecord

log = logging.getLogger("conscience.pipeline")


class RecordSink(Protocol):
    def submit(self, record: Record) -> None: ...


@dataclass(frozen=True, slots=True)
class CheckContext:
    """Everything about a request that the conscience step and its records need."""

    request_id: str
    endpoint: Literal["chat", "completions"]
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


def streamed_review(summary: StreamReviewSummary) -> Review:
    """A windowed stream's review as a `Review`: what the client got, and the verdict on the
    original (unethical when a window was flagged; unchecked when the judge failed on it)."""
    flagged = summary.flagged_window is not None
    review = Review(
        final_text=summary.released, verdict=ETHICAL, score=summary.score,
        repaired=summary.action == "repaired", refused=summary.action == "refused",
        attempts=summary.attempts, judge_ms=summary.judge_ms, repair_ms=summary.repair_ms,
        error=summary.error,
        rejected_drafts=[
            {"text": d.text, "reason": d.reason, **({"score": d.score} if d.score is not None else {})}
            for d in summary.drafts
        ],
    )
    if flagged:
        review.verdict = UNETHICAL
        review.original = Verdict(UNETHICAL, summary.score or 1.0, {"window": summary.flagged_window})
        if review.repaired:
            last = summary.windows[-1]
            review.accepted = Verdict(ETHICAL, last.score or 0.0, {"windows": len(summary.windows)})
    elif summary.action in ("unchecked", "refused"):  # the judge failed on the original
        review.verdict, review.unchecked_reason = UNCHECKED, JUDGE_ERROR
    elif summary.score is not None:
        review.original = Verdict(ETHICAL, summary.score)
    return review


class ConsciencePipeline:
    def __init__(
        self, reviewer: Reviewer, sink: RecordSink, metrics: Metrics, budget: ReviewBudget
    ) -> None:
        self._reviewer = reviewer
        self._sink = sink
        self._metrics = metrics
        self._budget = budget
        self._background: set[asyncio.Task[None]] = set()

    @property
    def refusal_message(self) -> str:
        return self._reviewer.refusal_message

    def admit(self, mode: Mode, count: int) -> None:
        """Before generating: ReviewsSaturated (429) when `count` reviews in `mode` find no room."""
        self._budget.admit(mode, count)

    async def check(
        self, context: CheckContext, cases: list[Case], *, upstream_ms: float
    ) -> list[Review]:
        """Enforce mode: review every choice concurrently, record the outcome, return the
        reviews in order; ReviewsSaturated when the bound on running reviews is reached."""
        with self._budget.running(len(cases)):
            return await self._review(context, cases, upstream_ms)

    async def _review(
        self, context: CheckContext, cases: list[Case], upstream_ms: float
    ) -> list[Review]:
        reviews = await asyncio.gather(
            *(self._reviewer.review(context.policy, c.conversation, c.answer) for c in cases)
        )
        for index, (case, review) in enumerate(zip(cases, reviews, strict=True)):
            self._record(context, index, case, review, upstream_ms)
        return list(reviews)

    def stream_review(
        self, context: CheckContext, conversation: list[JSON], deltas: AsyncIterator[str], *, window_chars: int,
        continued: Continued | None = None,
    ) -> StreamReview:
        """Enforce mode, windowed streaming: the review that releases `deltas` (one choice's)
        window by window; `continued`: see `Reviewer.stream_review`. Run it inside
        `streaming()`, and hand its summary to `record_stream` when it has ended."""
        return self._reviewer.stream_review(
            context.policy, conversation, deltas, window_chars=window_chars, continued=continued
        )

    def streaming(self, count: int = 1) -> AbstractContextManager[None]:
        """Hold `count` running reviews (one per choice) for a whole windowed stream;
        ReviewsSaturated without room."""
        return self._budget.running(count)

    def record_stream(
        self, context: CheckContext, conversation: list[JSON], summary: StreamReviewSummary, *, upstream_ms: float,
        index: int = 0,
    ) -> Review:
        """Record choice `index` of a windowed stream as the buffered path records a review;
        returns it."""
        review = streamed_review(summary)
        self._record(context, index, Case(conversation, summary.rejected or summary.released), review, upstream_ms)
        return review

    def skipped(self, context: CheckContext, count: int) -> None:
        """Mode off: `count` answers went to the client unjudged; the metrics show it."""
        if count:
            self._metrics.unchecked.labels(context.policy.framework.name, "mode_off", "sent").inc(count)

    def check_later(self, context: CheckContext, cases: list[Case], *, upstream_ms: float) -> None:
        """Monitor mode: review after the client has its answer; failures are only logged, and
        so are reviews beyond the bound on pending ones (requests admitted together)."""
        count = len(cases)
        if not self._budget.try_pend(count):
            log.warning(
                "background review of %s skipped: %d reviews pending already",
                context.request_id, self._budget.pending,
            )
            return
        task = asyncio.create_task(self._check_quietly(context, cases, upstream_ms))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda _: self._budget.done_pending(count))

    async def _check_quietly(self, context: CheckContext, cases: list[Case], upstream_ms: float) -> None:
        try:
            await self._review(context, cases, upstream_ms)
        except Exception:
            log.exception("background review of %s failed", context.request_id)

    @property
    def pending_reviews(self) -> int:
        return len(self._background)

    async def drain(self) -> None:
        """Shutdown: let monitor-mode reviews finish so their records reach the writer."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    def _record(
        self, context: CheckContext, index: int, case: Case, review: Review, upstream_ms: float
    ) -> None:
        framework = context.policy.framework.name
        if log.isEnabledFor(logging.DEBUG):  # prompts and answers never at INFO (invariant 5)
            log.debug(
                "choice %d: verdict %s (score %s) for answer %r; returned %r",
                index, review.verdict, review.score, case.answer, review.final_text,
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
            threshold=None if review.verdict == UNCHECKED else self._reviewer.threshold_for(context.policy),
        )
        if review.attempts and not review.repaired:
            # Blocked: no triple will hold this answer's text, so the check keeps it for review.
            check.prompt, check.answer = case.conversation, case.answer
            check.drafts = review.rejected_drafts
        self._sink.submit(check)
        if review.repaired and review.original is not None and review.accepted is not None:
            self._sink.submit(
                TripleRecord(
                    request_id=context.request_id,
                    client_request_id=context.client_request_id,
                    check_id=check.id,
                    framework=framework,
                    prompt=case.conversation,
                    rejected=case.answer,
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
