"""One answer through the conscience: the enforcement loop (service/conscience/engine.py) built
with this judge, repairer and policy — a buffered answer as one chunk judged in one window and
repaired from candidates, a windowed stream window by window and repaired by a streamed draft.

A draft that reads as a refusal is rejected before the judge sees it: a repair must still
answer the question. A judge passes refusals readily, and a refusal kept as the "chosen" side
of a training pair teaches the policy to refuse (measured: bench/RESULTS.md). So is a draft
whose opening is off the request's topic (service/conscience/topic.py), harmless to a judge
and no answer to the request, and a draft
that loops or trails off (service/conscience/degenerate.py): a looping "chosen" answer teaches
the policy to loop. Every draft honours the request's `DraftLimits`, and all the drafts of one
answer share one `RepairBudget` (service/conscience/bounds.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from service.conscience.bounds import DraftLimits, RepairBudget
from service.conscience.degenerate import degenerate_reason
from service.conscience.drafts import Continued, candidate_drafts, raced_candidates, streamed_draft
from service.conscience.engine import DraftSource, Enforcement, one_chunk
from service.conscience.judge import Judge, Verdict
from service.conscience.outcome import Review
from service.conscience.refusal import is_refusal
from service.conscience.repair import Repairer
from service.conscience.similarity import echoes, is_near_copy
from service.conscience.topic import TopicEmbedder, request_text
from service.core.backend import JSON
from service.frameworks import Framework
from service.settings import FailurePolicy, JudgeStyle


@dataclass(frozen=True, slots=True)
class ReviewPolicy:
    framework: Framework
    style: JudgeStyle
    max_repairs: int
    failure_policy: FailurePolicy
    judge_model: str
    limits: DraftLimits = DraftLimits()  # the request's own: every draft honours them


@dataclass(frozen=True, slots=True)
class RepairBounds:
    """The repair budget of each answer (None: unbounded), and how its candidates are drafted:
    `race` — one streamed n=k generation, each judged every `draft_window_chars` as it is
    generated, the first clean one winning (else: one call, judged whole in turn)."""

    max_draft_tokens: int | None = None
    max_seconds: float | None = None
    race: bool = False
    draft_window_chars: int | None = None

    def budget(self) -> RepairBudget:
        return RepairBudget(self.max_draft_tokens, self.max_seconds)


class Reviewer:
    def __init__(
        self, judge: Judge, repairer: Repairer, refusal_message: str, *, max_overlap: float = 0.5,
        bounds: RepairBounds = RepairBounds(), topic: TopicEmbedder | None = None,
    ) -> None:
        """`max_overlap`: a draft sharing this fraction of its word 3-grams with the rejected
        answer is a near-copy (service/conscience/similarity.py), and one sharing it (whole, or
        in one sentence) with the repair's own instructions an echo; both are discarded.
        `topic`: a draft whose opening is off the request's topic (service/conscience/topic.py)
        is discarded too; None, or a minimum similarity of 0: not checked."""
        self._judge = judge
        self._repairer = repairer
        self.refusal_message = refusal_message
        self._max_overlap = max_overlap
        self._bounds = bounds
        self._topic = topic

    async def review(
        self, policy: ReviewPolicy, conversation: list[JSON], answer: str, *, repair: bool = True
    ) -> Review:
        """A given (buffered) answer: one chunk judged in one window; a flagged one repaired
        from the repairer's candidates — up to `max_repairs` attempts, each drafted from the
        request alone by the attempt's strategy, the first that is neither empty, a refusal nor
        a near-copy of the answer and that the conscience passes (a latent verdict reading its
        opening too: judge.py) replacing it — or refused (`repair` False: at once)."""
        budget = self._bounds.budget()
        enforcement = self._enforcement(
            policy, conversation, one_chunk(answer), self._candidates(policy, conversation, budget),
            window_chars=None, max_repairs=policy.max_repairs if repair else 0, budget=budget,
        )
        return await enforcement.run()

    def _candidates(self, policy: ReviewPolicy, conversation: list[JSON], budget: RepairBudget) -> DraftSource:
        """A buffered answer's draft source: candidates raced (`RepairBounds.race`) or in turn."""
        source = raced_candidates if self._bounds.race else candidate_drafts
        return source(
            self._repairer, policy.framework, conversation, judge_model=policy.judge_model,
            limits=policy.limits, budget=budget,
        )

    def stream_review(
        self, policy: ReviewPolicy, conversation: list[JSON], deltas: AsyncIterator[str], *,
        window_chars: int | None, judge_context_chars: int | None = None, continued: Continued | None = None,
    ) -> Enforcement:
        """One streamed answer with this judge and repairer. `window_chars` None: the answer is
        judged in one window once it has ended, and repaired from candidates, as `review`.
        Else windowed: a repair continues the text the client has, or drafts the answer from
        the request by the attempt's strategy (the rejected answer not in view) when it has
        none; a draft whose opening reads as a refusal, repeats the rejected answer (a
        near-copy) or names the framework is discarded before the judge, and a reframed
        question copied from the reframe's worked examples is not answered (the attempt
        regenerates instead). `continued`: see service/conscience/drafts.py.
        `judge_context_chars` bounds what a fast or reasoned verdict reads before each window
        (Enforcement); a latent verdict reads the whole answer so far."""
        budget = self._bounds.budget()
        if window_chars is None:
            return self._enforcement(
                policy, conversation, deltas, self._candidates(policy, conversation, budget), window_chars=None,
                max_repairs=policy.max_repairs, budget=budget,
            )
        drafts = streamed_draft(
            self._repairer, policy.framework, conversation, judge_model=policy.judge_model,
            rejected=lambda: enforcement.outcome.answer, continued=continued,
            question_is_echo=lambda question: self._question_echoes(question, policy.framework),
            limits=policy.limits, budget=budget, released_tokens=lambda: enforcement.outcome.released_deltas,
        )
        enforcement = self._enforcement(
            policy, conversation, deltas, drafts, window_chars=window_chars, max_repairs=policy.max_repairs,
            judge_context_chars=None if policy.style is JudgeStyle.LATENT else judge_context_chars, budget=budget,
        )
        return enforcement

    def _enforcement(
        self, policy: ReviewPolicy, conversation: list[JSON], deltas: AsyncIterator[str], drafts: DraftSource,
        *, window_chars: int | None, max_repairs: int, judge_context_chars: int | None = None,
        budget: RepairBudget | None = None,
    ) -> Enforcement:
        async def judge(so_far: str) -> Verdict:
            return await self._judge.judge(
                policy.framework, conversation, so_far, judge_model=policy.judge_model, style=policy.style
            )

        async def judge_draft(draft: str) -> Verdict:
            return await self._judge.judge(
                policy.framework, conversation, draft, judge_model=policy.judge_model, style=policy.style,
                read_opening=True,
            )

        topic = (
            self._topic.for_answer(request_text(conversation))
            if self._topic is not None and self._topic.min_similarity > 0 else None
        )

        async def reject_draft(opening: str, question: str | None) -> str | None:
            rejected = enforcement.outcome.answer
            reason = self._discard_reason(opening.strip(), rejected, policy.framework, question=question)
            if reason is not None or topic is None:
                return reason
            return await topic.discard_reason(opening.strip())  # the backend is asked last: it costs a pass

        enforcement = Enforcement(
            deltas, window_chars=window_chars, judge=judge, judge_draft=judge_draft, drafts=drafts,
            refusal=self.refusal_message, max_repairs=max_repairs,
            fail_open=policy.failure_policy is FailurePolicy.FAIL_OPEN, reject_draft=reject_draft,
            judge_context_chars=judge_context_chars, degenerate=_degenerate, budget=budget,
            draft_window_chars=self._bounds.draft_window_chars,
            judge_draft_windows=policy.style is JudgeStyle.LATENT,
        )
        if topic is not None:
            enforcement.outcome.topic_checks = topic.results
        return enforcement

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


def _degenerate(text: str, ended_by_itself: bool) -> str | None:
    return degenerate_reason(text, finished=ended_by_itself)


def _repair_instructions(framework: Framework) -> tuple[str, ...]:
    """What the repairer is shown besides the request. A small model echoes it: with the demo
    model, "The law, the history, the safety facts, a harmless alternative." (the instructions'
    own list) as a draft; with a worked example in them, four of eight passed repairs copied the
    example's locksmith advice (bench/results/xstest_repair_oneshot/). An echo is no repair."""
    return (
        framework.regenerate_instructions(), framework.continue_instructions(),
        framework.reframed_answer_instructions(),
    )
