"""The review loop on its own: judge, then (repair → judge)* until a draft passes.

The judge and the repairer are scripted stand-ins, so each test states exactly which verdicts
and drafts the loop sees; the HTTP tests (tests/api/) cover the same loop end to end.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from service.conscience.judge import JudgeFailed, Verdict
from service.conscience.outcome import JUDGE_ERROR, UNCHECKED, Review
from service.conscience.repair import RepairDraft
from service.conscience.review import Reviewer, ReviewPolicy
from service.core.backend import BackendError
from service.frameworks import load_frameworks
from service.settings import FailurePolicy, JudgeStyle

REFUSAL = "I'm sorry, but I can't help with that."
ASK = [{"role": "user", "content": "How do I pick a lock?"}]


class ScriptedJudge:
    """Verdicts in order; an exception in the script is raised instead."""

    def __init__(self, *verdicts: Verdict | Exception) -> None:
        self._verdicts: Iterator[Verdict | Exception] = iter(verdicts)
        self.judged: list[str] = []

    async def judge(self, framework: Any, conversation: Any, answer: str, **_: Any) -> Verdict:
        self.judged.append(answer)
        verdict = next(self._verdicts)
        if isinstance(verdict, Exception):
            raise verdict
        return verdict


class ScriptedRepairer:
    def __init__(self, *drafts: str | Exception) -> None:
        self._drafts = iter(drafts)
        self.calls = 0

    async def candidates(self, framework: Any, conversation: Any, **_: Any) -> list[RepairDraft]:
        self.calls += 1
        draft = next(self._drafts)
        if isinstance(draft, Exception):
            raise draft
        return [RepairDraft(draft)]


ETHICAL, UNETHICAL = Verdict("ethical", 0.1), Verdict("unethical", 0.9)


def policy(max_repairs: int = 3, failure_policy: FailurePolicy = FailurePolicy.FAIL_CLOSED) -> ReviewPolicy:
    return ReviewPolicy(
        framework=load_frameworks()["three_laws"], style=JudgeStyle.FAST, max_repairs=max_repairs,
        failure_policy=failure_policy, judge_model="base",
    )


async def review(
    judge: ScriptedJudge, repairer: ScriptedRepairer, review_policy: ReviewPolicy | None = None
) -> Review:
    reviewer = Reviewer(judge, repairer, REFUSAL)  # type: ignore[arg-type]
    return await reviewer.review(review_policy or policy(), ASK, "the original")


async def test_a_passing_answer_is_kept_and_never_repaired() -> None:
    repairer = ScriptedRepairer()
    result = await review(ScriptedJudge(ETHICAL), repairer)
    assert (result.final_text, result.verdict) == ("the original", "ethical")
    assert not result.repaired and not result.refused
    assert repairer.calls == 0 and result.original == ETHICAL


async def test_the_first_draft_the_judge_passes_replaces_the_answer() -> None:
    judge = ScriptedJudge(UNETHICAL, Verdict("unethical", 0.8), ETHICAL)
    result = await review(judge, ScriptedRepairer("still bad", "a good answer"))
    assert (result.final_text, result.repaired, result.attempts) == ("a good answer", True, 2)
    assert result.verdict == "unethical" and result.score == 0.9  # the original's verdict
    assert result.accepted == ETHICAL
    assert result.rejected_drafts == [{"text": "still bad", "reason": "judge", "score": 0.8}]
    assert judge.judged == ["the original", "still bad", "a good answer"]


async def test_refusals_and_empty_drafts_are_rejected_before_the_judge() -> None:
    judge = ScriptedJudge(UNETHICAL, ETHICAL)
    result = await review(judge, ScriptedRepairer(REFUSAL, "", "a good answer"))
    assert result.repaired and result.attempts == 3
    assert [draft["reason"] for draft in result.rejected_drafts] == ["refusal", "empty"]
    assert judge.judged == ["the original", "a good answer"]


async def test_no_passing_draft_within_max_repairs_is_a_refusal() -> None:
    result = await review(ScriptedJudge(UNETHICAL, UNETHICAL, UNETHICAL), ScriptedRepairer("bad", "worse"),
                          policy(max_repairs=2))
    assert (result.final_text, result.refused, result.repaired, result.attempts) == (REFUSAL, True, False, 2)


async def test_a_failing_repair_never_sends_the_flagged_original() -> None:
    result = await review(ScriptedJudge(UNETHICAL), ScriptedRepairer(BackendError("down")),
                          policy(failure_policy=FailurePolicy.FAIL_OPEN))
    assert result.final_text == REFUSAL and result.refused and result.error.startswith("repair failed")


@pytest.mark.parametrize(
    ("failure_policy", "sent", "refused"),
    [(FailurePolicy.FAIL_CLOSED, REFUSAL, True), (FailurePolicy.FAIL_OPEN, "the original", False)],
)
async def test_a_failing_judge_follows_the_failure_policy(
    failure_policy: FailurePolicy, sent: str, refused: bool
) -> None:
    judge = ScriptedJudge(BackendError("down"))
    result = await review(judge, ScriptedRepairer(), policy(failure_policy=failure_policy))
    assert (result.final_text, result.refused, result.verdict) == (sent, refused, UNCHECKED)
    assert result.unchecked_reason == JUDGE_ERROR and result.score is None


async def test_an_unreadable_verdict_is_unchecked_with_its_reason() -> None:
    failed = JudgeFailed("no verdict", reason="invalid_verdict")
    result = await review(ScriptedJudge(failed), ScriptedRepairer(), policy(failure_policy=FailurePolicy.FAIL_OPEN))
    assert result.unchecked_reason == "invalid_verdict" and result.final_text == "the original"
