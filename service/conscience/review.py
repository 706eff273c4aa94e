"""One answer through the conscience step: judge, then (repair → judge)* until one passes.

A draft that reads as a refusal is rejected before the judge sees it: a repair must still
answer the question. A judge passes refusals readily, and a refusal kept as the "chosen" side
of a training pair teaches the policy to refuse (measured: bench/RESULTS.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from service.backends.base import JSON, BackendError
from service.conscience.frameworks import Framework
from service.conscience.judge import Judge, JudgeFailed, Verdict
from service.conscience.refusal import is_refusal
from service.conscience.repair import Repairer
from service.conscience.similarity import echoes, is_near_copy
from service.conscience.stream_review import Continued, StreamReview
from service.settings import FailurePolicy, JudgeStyle

log = logging.getLogger("conscience.review")

UNCHECKED = "unchecked"
# Why a repair draft was discarded (`Review.rejected_drafts[i]["reason"]`); "judge": flagged again.
DISCARD_REASONS = ("empty", "refusal", "near_copy", "mentions_framework", "echoes_instructions", "judge")
JUDGE_ERROR = "judge_error"  # why an answer is unchecked: the judge model's server failed
# Why a monitored answer is unchecked: no background review had room (monitor_overflow).
REVIEW_OVERFLOW = "review_overflow"


@dataclass(frozen=True, slots=True)
class ReviewPolicy:
    framework: Framework
    style: JudgeStyle
    max_repairs: int
    failure_policy: FailurePolicy
    judge_model: str


@dataclass(slots=True)
class Review:
    """What the conscience decided about one answer."""

    final_text: str
    verdict: str  # ethical | neutral | unethical | unchecked
    score: float | None
    repaired: bool = False
    refused: bool = False
    attempts: int = 0
    judge_ms: float = 0.0
    repair_ms: float = 0.0
    error: str | None = None
    unchecked_reason: str | None = None  # with verdict unchecked: JudgeFailed.reason or the above
    original: Verdict | None = None
    accepted: Verdict | None = None  # the verdict on the repair that was returned
    rejected_drafts: list[dict[str, Any]] = field(default_factory=list)
    reframed_question: str | None = None  # the returned repair answers this question (reframe)

    @property
    def signals(self) -> dict[str, float] | None:
        """The score of each verdict signal that ran on the original answer (latent, fast…)."""
        if self.original is None:
            return None
        return dict(self.original.detail.get("signals") or {}) or None


class Reviewer:
    def __init__(
        self, judge: Judge, repairer: Repairer, refusal_message: str, *, max_overlap: float = 0.5
    ) -> None:
        """`max_overlap`: a draft sharing this fraction of its word 3-grams with the rejected
        answer is a near-copy (service/conscience/similarity.py), and one sharing it (whole, or
        in one sentence) with the repair's own instructions an echo; both are discarded."""
        self._judge = judge
        self._repairer = repairer
        self.refusal_message = refusal_message
        self._max_overlap = max_overlap

    def threshold_for(self, policy: ReviewPolicy) -> float:
        """The score at or above which this policy's verdicts are flagged (the judge decides)."""
        return self._judge.threshold_for(policy.style, policy.framework.name, policy.judge_model)

    async def review(self, policy: ReviewPolicy, conversation: list[JSON], answer: str) -> Review:
        started = time.perf_counter()
        try:
            verdict = await self._judge.judge(
                policy.framework, conversation, answer,
                judge_model=policy.judge_model, style=policy.style,
            )
        except (BackendError, JudgeFailed) as exc:
            log.warning("judge failed (%s): %s", policy.failure_policy.value, exc)
            review = Review(
                final_text=answer, verdict=UNCHECKED, score=None, error=f"judge failed: {exc}",
                unchecked_reason=exc.reason if isinstance(exc, JudgeFailed) else JUDGE_ERROR,
            )
            if policy.failure_policy is FailurePolicy.FAIL_CLOSED:
                review.final_text, review.refused = self.refusal_message, True
            review.judge_ms = _ms_since(started)
            return review
        judge_ms = _ms_since(started)
        review = Review(
            final_text=answer, verdict=verdict.label, score=verdict.score,
            judge_ms=judge_ms, original=verdict,
        )
        if verdict.flagged:
            await self._repair(policy, conversation, answer, review)
        return review

    async def _repair(
        self, policy: ReviewPolicy, conversation: list[JSON], answer: str, review: Review
    ) -> None:
        """Up to `max_repairs` attempts, each drawing the repairer's candidates — drafted from the
        request alone by the attempt's strategy, the rejected answer not in view; the first
        candidate that is neither empty, a refusal nor a near-copy of the rejected answer, and
        that the conscience passes (a latent verdict reading its opening too: judge.py),
        replaces the answer. Every discarded draft is recorded with its reason (and, when
        reframed, its question)."""
        started = time.perf_counter()
        try:
            for attempt in range(1, policy.max_repairs + 1):
                review.attempts = attempt
                drafts = await self._repairer.candidates(
                    policy.framework, conversation, judge_model=policy.judge_model, attempt=attempt
                )
                for draft in drafts:
                    # A reframed draft's record names the question it answers instead.
                    drafted = {"text": draft.text} | ({"question": draft.question} if draft.question else {})
                    reason = self._discard_reason(draft.text, answer, policy.framework, question=draft.question)
                    if reason is not None:
                        review.rejected_drafts.append(drafted | {"reason": reason})
                        continue
                    verdict = await self._judge.judge(
                        policy.framework, conversation, draft.text,
                        judge_model=policy.judge_model, style=policy.style, read_opening=True,
                    )
                    if not verdict.flagged:
                        review.final_text, review.repaired, review.accepted = draft.text, True, verdict
                        review.reframed_question = draft.question
                        return
                    review.rejected_drafts.append(drafted | {"reason": "judge", "score": verdict.score})
        except (BackendError, JudgeFailed) as exc:
            # The original is known to be unethical: whatever the failure policy, it is not sent.
            log.warning("repair failed: %s", exc)
            review.error = f"repair failed: {exc}"
        finally:
            review.repair_ms = _ms_since(started)
        review.final_text, review.refused = self.refusal_message, True

    def stream_review(
        self, policy: ReviewPolicy, conversation: list[JSON], deltas: AsyncIterator[str], *, window_chars: int,
        judge_context_chars: int | None = None, continued: Continued | None = None,
    ) -> StreamReview:
        """Windowed enforce streaming of one answer (service/conscience/stream_review.py) with
        this judge and repairer: a repair continues the text the client has, or drafts the
        answer from the request by the attempt's strategy (the rejected answer not in view)
        when it has none; a draft whose opening reads as a refusal, repeats the rejected
        answer (a near-copy, as `review` discards one) or names the framework is discarded
        before the judge, and a reframed question copied from the reframe's worked examples
        is not answered (the attempt regenerates instead).
        `continued(released)`: when the judged text is more than the answer's own (a chat
        answer's reasoning, rendered as the judge reads it), the part of `released` a repair
        continues and the text that joins the repair to it (service/api/windowed_stream.py).
        `judge_context_chars` bounds what a fast or reasoned verdict reads before each window
        (StreamReview); a latent verdict reads the whole answer so far."""

        async def judge(so_far: str) -> Verdict:
            return await self._judge.judge(
                policy.framework, conversation, so_far, judge_model=policy.judge_model, style=policy.style
            )

        def repair(released: str, attempt: int) -> AsyncIterator[str]:
            own, lead = continued(released) if continued is not None else (released, "")
            deltas = self._repairer.repair_stream(
                policy.framework, conversation, review.summary.rejected or "",
                judge_model=policy.judge_model, released=own, attempt=attempt,
                question_is_echo=lambda question: self._question_echoes(question, policy.framework),
            )
            return _led(lead, deltas) if lead else deltas

        def reject_draft(opening: str) -> str | None:
            return self._discard_reason(opening.strip(), review.summary.rejected or "", policy.framework)

        review = StreamReview(
            deltas, window_chars=window_chars, judge=judge, repair=repair,
            refusal=self.refusal_message, max_repairs=policy.max_repairs,
            fail_open=policy.failure_policy is FailurePolicy.FAIL_OPEN, reject_draft=reject_draft,
            judge_context_chars=None if policy.style is JudgeStyle.LATENT else judge_context_chars,
        )
        return review

    def _discard_reason(
        self, draft: str, rejected: str, framework: Framework, *, question: str | None = None
    ) -> str | None:
        """Why `draft` is no repair, or None; `question`: the reframed question it answers,
        discarded as an echo when it is the reframe instructions' own example."""
        if not draft:
            return "empty"
        if is_refusal(draft):
            return "refusal"
        if is_near_copy(draft, rejected, self._max_overlap):
            return "near_copy"
        if framework.is_mentioned_in(draft):
            return "mentions_framework"
        if any(self._echoes(draft, shown) for shown in _repair_instructions(framework)):
            return "echoes_instructions"
        if question and self._question_echoes(question, framework):
            return "echoes_instructions"
        return None

    def _echoes(self, text: str, shown: str) -> bool:
        return echoes(text, shown, self._max_overlap)

    def _question_echoes(self, question: str, framework: Framework) -> bool:
        """A reframed question copied from the reframe instructions (their worked examples)."""
        return self._echoes(question, framework.reframe_instructions())


def _repair_instructions(framework: Framework) -> tuple[str, ...]:
    """What the repairer is shown besides the request. A small model echoes it: with the demo
    model, "The law, the history, the safety facts, a harmless alternative." (the instructions'
    own list) as a draft; with a worked example in them, four of eight passed repairs copied the
    example's locksmith advice (bench/results/xstest_repair_oneshot/). An echo is no repair."""
    return (
        framework.regenerate_instructions(), framework.continue_instructions(),
        framework.reframed_answer_instructions(),
    )


async def _led(lead: str, deltas: AsyncIterator[str]) -> AsyncIterator[str]:
    """`deltas` with `lead` joined to the first one (one delta: one token)."""
    try:
        async for delta in deltas:
            yield lead + delta
            lead = ""
    finally:
        aclose = getattr(deltas, "aclose", None)
        if aclose is not None:
            await aclose()


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
