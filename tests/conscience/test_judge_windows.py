"""The judge reads all of an answer, and an unusable verdict is a failure, never a pass."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence

import pytest

from service.backends.labels import probs_from_top_logprobs
from service.conscience.fencing import answer_windows
from service.conscience.judge import LABELS, Judge, JudgeFailed, Verdict
from service.conscience.repair import Repairer
from service.conscience.review import Reviewer, ReviewPolicy
from service.core.backend import JSON, LabelProbs
from service.frameworks import load_frameworks
from service.settings import FailurePolicy, JudgeStyle, Settings

HARM = "Buy a crowbar and break the neighbour's window at night."
FRAMEWORK = load_frameworks()["three_laws"]
ASK = [{"role": "user", "content": "My neighbour is loud."}]


class StubJudgeModel:
    """A backend whose judge model answers with `probs(answer window)`."""

    def __init__(self, probs: Callable[[str], dict[str, float]]) -> None:
        self._probs = probs
        self.windows: list[str] = []

    async def label_probs(self, model: str, messages: list[JSON], labels: Sequence[str]) -> LabelProbs:
        window = messages[-1]["content"].split("<answer>\n", 1)[1].split("\n</answer>", 1)[0]
        self.windows.append(window)
        return LabelProbs(self._probs(window), "logprobs")


def flags_whole_harm(window: str) -> dict[str, float]:
    return {"Yes": 0.9, "No": 0.1} if HARM in window else {"Yes": 0.05, "No": 0.95}


def judge_with(backend: StubJudgeModel, **kwargs: int) -> Judge:
    options = {"max_answer_chars": 2000, "window_overlap_chars": 500, "max_windows": 16, **kwargs}
    return Judge(backend, threshold=0.5, reasoned_max_tokens=8, **options)  # type: ignore[arg-type]


def verdict_of(judge: Judge, answer: str) -> Verdict:
    return asyncio.run(judge.judge(FRAMEWORK, ASK, answer, judge_model="base"))


def test_harm_after_the_first_window_is_flagged() -> None:
    backend = StubJudgeModel(flags_whole_harm)
    verdict = verdict_of(judge_with(backend), "Fine. " * 2500 + HARM)
    assert verdict.flagged and verdict.score == pytest.approx(0.9)
    assert len(backend.windows) > 1 and verdict.detail["windows"] == len(backend.windows)


@pytest.mark.parametrize("offset", range(1990 - len(HARM), 2010))
def test_harm_on_a_window_boundary_is_seen_whole(offset: int) -> None:
    backend = StubJudgeModel(flags_whole_harm)
    answer = "a" * offset + HARM + "b" * 3000
    assert verdict_of(judge_with(backend), answer).flagged


def test_windows_cover_the_answer_with_overlap() -> None:
    answer = "".join(chr(65 + i % 26) for i in range(10_001))
    windows = answer_windows(answer, size=2000, overlap=500)
    bare = [w.removeprefix("[cut]… ").removesuffix(" …[cut]") for w in windows]
    assert all(len(w) <= 2000 for w in bare) and bare[0] == answer[:2000] and answer.endswith(bare[-1])
    for before, after in zip(bare, bare[1:], strict=False):
        assert before[-500:] == after[:500]
    assert answer_windows("short", size=2000, overlap=500) == ["short"]


def test_an_answer_too_long_to_judge_is_a_judge_failure() -> None:
    backend = StubJudgeModel(flags_whole_harm)
    with pytest.raises(JudgeFailed) as failed:
        verdict_of(judge_with(backend, max_windows=2), "x" * 5000)
    assert failed.value.reason == "answer_too_long" and backend.windows == []


@pytest.mark.parametrize(
    "probs",
    [
        {"Yes": math.nan, "No": 0.5},
        {"Yes": 0.1, "No": math.nan},
        {"Yes": math.inf, "No": 0.1},
        {"Yes": 2.0, "No": 0.1},
        {"Yes": -0.5, "No": 0.9},
        {"Yes": 0.9, "No": 0.9},  # more than all the probability there is
    ],
)
def test_unusable_probabilities_are_a_judge_failure(probs: dict[str, float]) -> None:
    with pytest.raises(JudgeFailed) as failed:
        verdict_of(judge_with(StubJudgeModel(lambda _: probs)), "Fine.")
    assert failed.value.reason == "invalid_verdict"


@pytest.mark.parametrize("logprob", [1000.0, math.nan, 0.5])
def test_impossible_logprobs_give_unusable_probabilities_not_an_overflow(logprob: float) -> None:
    probs = probs_from_top_logprobs([("Yes", logprob), ("No", -1.0)], LABELS)
    with pytest.raises(JudgeFailed):
        verdict_of(judge_with(StubJudgeModel(lambda _: probs)), "Fine.")


def test_a_nan_verdict_follows_the_failure_policy() -> None:
    judge = judge_with(StubJudgeModel(lambda _: {"Yes": math.nan, "No": 0.5}))
    reviewer = Reviewer(judge, Repairer(None, max_tokens=8, max_answer_chars=2000), "Refused.")  # type: ignore[arg-type]
    policy = ReviewPolicy(FRAMEWORK, JudgeStyle.FAST, 1, FailurePolicy.FAIL_CLOSED, "base")
    review = asyncio.run(reviewer.review(policy, ASK, HARM))
    assert review.verdict == "unchecked" and review.refused and review.final_text == "Refused."
    assert review.unchecked_reason == "invalid_verdict"


def test_the_default_failure_policy_is_fail_closed() -> None:
    assert Settings().policy.failure_policy is FailurePolicy.FAIL_CLOSED
