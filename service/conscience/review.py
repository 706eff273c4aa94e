"""One answer through the conscience: the enforcement loop (service/conscience/engine.py) built
with this judge, repairer and policy — a buffered answer as one chunk judged in one window and
repaired from candidates, a windowed stream window by window and repaired by a streamed draft.

A draft the screen discards (a refusal, a near-copy, an echo, off the request's topic:
service/conscience/screening.py) never reaches the judge, nor does a draft that loops or trails
off (service/conscience/degenerate.py): a looping "chosen" answer teaches the policy to loop.
Every draft honours the request's `DraftLimits`, and all the drafts of one answer share one
`RepairBudget` (service/conscience/bounds.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from service.conscience.bounds import DraftLimits, RepairBudget
from service.conscience.degenerate import degenerate_reason
from service.conscience.deltas import DraftSource, one_chunk
from service.conscience.drafts import CandidateDrafts, Continued, RacedCandidates, RepairCase, StreamedDraft
from service.conscience.engine import Enforcement
from service.conscience.judge import Judge, Verdict
from service.conscience.outcome import Review
from service.conscience.repair import Repairer
from service.conscience.screening import DraftScreen
from service.conscience.topic import TopicEmbedder
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
        """`max_overlap` and `topic`: what a draft must not be (service/conscience/screening.py)."""
        self._judge = judge
        self._repairer = repairer
        self.refusal_message = refusal_message
        self._screen = DraftScreen(max_overlap=max_overlap, topic=topic)
        self._bounds = bounds

    async def review(
        self, policy: ReviewPolicy, conversation: list[JSON], answer: str, *, repair: bool = True
    ) -> Review:
        """A given (buffered) answer, as `stream_review` reviews one chunk in one window
        (`repair` False: a flagged answer refused at once)."""
        return await self.stream_review(policy, conversation, one_chunk(answer), window_chars=None, repair=repair).run()

    def stream_review(
        self, policy: ReviewPolicy, conversation: list[JSON], deltas: AsyncIterator[str], *,
        window_chars: int | None, judge_context_chars: int | None = None, continued: Continued | None = None,
        repair: bool = True,
    ) -> Enforcement:
        """One answer's enforcement with this judge and repairer. `window_chars` None: the
        answer is judged in one window once it has ended, and repaired from candidates — up to
        `max_repairs` attempts, each drafted from the request alone by the attempt's strategy
        (raced, with `RepairBounds.race`), the first that is neither empty, a refusal nor a
        near-copy of the answer and that the conscience passes (a latent verdict reading its
        opening too: judge.py) replacing it — or refused (`repair` False: at once).
        Else windowed: a repair continues the text the client has, or drafts the answer from
        the request by the attempt's strategy (the rejected answer not in view) when it has
        none; a draft the screen discards (service/conscience/screening.py) never reaches the
        judge, and a reframed question copied from the reframe's worked examples is not
        answered (the attempt regenerates instead). `continued`: see
        service/conscience/drafts.py. `judge_context_chars` bounds what a fast or reasoned
        verdict reads before each window; a latent verdict reads the whole answer so far."""
        framework, style, judge_model = policy.framework, policy.style, policy.judge_model

        async def judge(so_far: str) -> Verdict:
            return await self._judge.judge(framework, conversation, so_far, judge_model=judge_model, style=style)

        async def judge_draft(draft: str) -> Verdict:
            return await self._judge.judge(
                framework, conversation, draft, judge_model=judge_model, style=style, read_opening=True
            )

        def rejected() -> str:
            return enforcement.outcome.answer

        def released_tokens() -> int:
            return enforcement.outcome.released_deltas

        screen = self._screen.for_answer(framework, conversation, rejected)
        case = RepairCase(framework, conversation, judge_model, policy.limits, self._bounds.budget())
        drafts: DraftSource
        if window_chars is not None:
            drafts = StreamedDraft(
                self._repairer, case, rejected=rejected, continued=continued,
                question_is_echo=screen.question_echoes, released_tokens=released_tokens,
            )
        elif self._bounds.race:
            drafts = RacedCandidates(self._repairer, case)
        else:
            drafts = CandidateDrafts(self._repairer, case)
        windowed_context = window_chars is not None and style is not JudgeStyle.LATENT
        enforcement = Enforcement(
            deltas, window_chars=window_chars, judge=judge, judge_draft=judge_draft, drafts=drafts,
            refusal=self.refusal_message, max_repairs=policy.max_repairs if repair else 0,
            fail_open=policy.failure_policy is FailurePolicy.FAIL_OPEN, reject_draft=screen.discard_reason,
            judge_context_chars=judge_context_chars if windowed_context else None, degenerate=_degenerate,
            budget=case.budget, draft_window_chars=self._bounds.draft_window_chars,
            judge_draft_windows=style is JudgeStyle.LATENT, topic_checks=screen.topic_checks,
        )
        return enforcement


def _degenerate(text: str, ended_by_itself: bool) -> str | None:
    return degenerate_reason(text, finished=ended_by_itself)
