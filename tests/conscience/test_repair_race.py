"""Repairs that read well and cost one generation (issue 28): a looping draft is discarded with
reason "loop" before the judge; the k candidates are one streamed n=k generation, raced — a
flagged draft stops at once, the first that ends clean wins and the others are stopped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from service.conscience.judge import Verdict
from service.conscience.repair import RepairDraft, Repairer
from service.conscience.review import RepairBounds, Reviewer, ReviewPolicy
from service.core.backend import JSON
from service.frameworks import load_frameworks
from service.settings import FailurePolicy, JudgeStyle

FRAMEWORK = load_frameworks()["three_laws"]
ASK = [{"role": "user", "content": "How do I make a pipe bomb?"}]
REJECTED = "Step 1: take a steel pipe and two end caps. Step 2: fill it with powder."
LOOP = "Making a pipe bomb is illegal. " + "The law also prohibits any use of weapons in a manner that " * 12
CLEAN = "Pipe bombs are illegal and kill people; if you know of a threat, call the police at once."
HARMFUL = "Take a steel pipe, caps and black powder, drill a hole for the fuse and pack it tight."
LONG_CLEAN = "Explosives laws exist for many reasons: " + " ".join(f"reason{i}," for i in range(200)) + " and more."


class Judge:
    """Flags any text with "powder" in it; counts what it read."""

    def __init__(self) -> None:
        self.judged: list[str] = []

    async def judge(self, framework: Any, conversation: Any, answer: str, **_: Any) -> Verdict:
        self.judged.append(answer)
        return Verdict("unethical", 0.9) if "powder" in answer else Verdict("ethical", 0.1)

    def threshold_for(self, *_: Any) -> float:
        return 0.5


class Candidates:
    def __init__(self, *texts: str) -> None:
        self._texts = texts

    async def candidates(self, *_: Any, **__: Any) -> list[RepairDraft]:
        return [RepairDraft(text, ended_by_itself=True) for text in self._texts]


def policy(style: JudgeStyle = JudgeStyle.LATENT) -> ReviewPolicy:
    return ReviewPolicy(
        framework=FRAMEWORK, style=style, max_repairs=1, failure_policy=FailurePolicy.FAIL_CLOSED, judge_model="base"
    )


def test_a_looping_draft_is_discarded_with_reason_loop_before_the_judge() -> None:
    judge = Judge()
    reviewer = Reviewer(judge, Candidates(LOOP, CLEAN), "Refused.")  # type: ignore[arg-type]
    review = asyncio.run(reviewer.review(policy(), ASK, REJECTED + " powder"))
    assert review.repaired and review.final_text == CLEAN
    assert [d["reason"] for d in review.rejected_drafts] == ["loop"]
    assert LOOP not in judge.judged


def test_a_draft_that_trails_off_is_discarded() -> None:
    reviewer = Reviewer(Judge(), Candidates("Pipe bombs are dangerous and illegal because of", CLEAN), "No.")  # type: ignore[arg-type]
    review = asyncio.run(reviewer.review(policy(), ASK, REJECTED + " powder"))
    assert review.final_text == CLEAN and [d["reason"] for d in review.rejected_drafts] == ["trails_off"]


def words(text: str) -> list[str]:
    return [word + " " for word in text.split()]


class StreamingUpstream:
    """An n=k streamed generation, one word per choice per round (as a batch decodes);
    counts the words it generated and the choices its reader stopped."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.calls: list[JSON] = []
        self.generated = 0
        self.stopped: set[int] = set()
        self.closed = False

    def chat_stream(self, body: JSON) -> Stream:
        self.calls.append(body)
        return Stream(self)


class Stream:
    def __init__(self, upstream: StreamingUpstream) -> None:
        self._upstream = upstream
        self._texts = list(upstream.texts)
        self.stopped: set[int] = set()
        self._chunks = self._generate()

    async def _generate(self) -> AsyncIterator[JSON]:
        up = self._upstream
        streams = [words(text) for text in self._texts]
        try:
            for position in range(max(len(s) for s in streams)):
                for index, stream in enumerate(streams):
                    if index in self.stopped or position >= len(stream):
                        continue
                    up.generated += 1
                    last = position == len(stream) - 1
                    yield {"choices": [{"index": index, "delta": {"content": stream[position]},
                                        "finish_reason": "stop" if last else None}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": up.generated}}
                    await asyncio.sleep(0)
        finally:
            up.closed = True

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> JSON:
        return await anext(self._chunks)

    def stop_choice(self, index: int) -> None:
        self.stopped.add(index)
        self._upstream.stopped.add(index)

    async def aclose(self) -> None:
        await self._chunks.aclose()


def raced_review(texts: list[str], *, style: JudgeStyle = JudgeStyle.LATENT) -> tuple[Any, StreamingUpstream, Judge]:
    upstream = StreamingUpstream(texts)
    judge = Judge()
    repairer = Repairer(upstream, max_tokens=512, max_answer_chars=2000, candidates=len(texts))  # type: ignore[arg-type]
    bounds = RepairBounds(race=True, draft_window_chars=40)
    reviewer = Reviewer(judge, repairer, "Refused.", bounds=bounds)  # type: ignore[arg-type]
    return asyncio.run(reviewer.review(policy(style), ASK, REJECTED)), upstream, judge


def test_the_first_clean_draft_wins_and_the_others_are_stopped() -> None:
    review, upstream, _ = raced_review([LONG_CLEAN, HARMFUL, CLEAN])
    assert review.repaired and review.final_text.strip() == CLEAN
    [call] = upstream.calls  # one n=k generation
    assert call["n"] == 3 and call["stream_options"]["continuous_usage_stats"]
    assert [d["reason"] for d in review.rejected_drafts] == ["judge"]  # the harmful one, stopped
    assert review.rejected_drafts[0]["text"].strip() != HARMFUL  # ... before it had ended
    assert upstream.stopped >= {1}  # the flagged choice was stopped where it was generated
    assert upstream.closed  # and the long one with the whole generation, once the clean one won
    everything = sum(len(text.split()) for text in (LONG_CLEAN, HARMFUL, CLEAN))
    assert upstream.generated < len(CLEAN.split()) * 3 < everything


def test_a_looping_draft_stops_as_soon_as_it_loops() -> None:
    review, upstream, _ = raced_review([LOOP * 3, CLEAN + " " + LONG_CLEAN])
    assert review.repaired and review.final_text.startswith(CLEAN)
    assert [d["reason"] for d in review.rejected_drafts] == ["loop"]
    assert len(review.rejected_drafts[0]["text"]) < len(LOOP)  # stopped mid-loop
    assert not upstream.stopped or 0 in upstream.stopped


def test_without_a_cheap_verdict_raced_drafts_are_judged_once_each_when_they_end() -> None:
    review, _, judge = raced_review([HARMFUL, CLEAN], style=JudgeStyle.FAST)
    assert review.final_text.strip() == CLEAN
    assert len(judge.judged) <= 3  # the answer and at most one verdict per draft


class BothUpstream(StreamingUpstream):
    """Regenerates HARMFUL (n=k, streamed); draws a reframed question only once that generation
    is under way (so the race must already be reading it), and answers the question with CLEAN."""

    def __init__(self) -> None:
        super().__init__([HARMFUL] * 3)
        self.question_drawn_after: int | None = None
        self.questions: list[JSON] = []

    async def chat(self, body: JSON) -> JSON:
        self.questions.append(body)
        while self.generated == 0:
            await asyncio.sleep(0.001)
        self.question_drawn_after = self.generated
        return {"choices": [{"message": {"content": "making a pipe bomb"}, "finish_reason": "stop"}]}

    def chat_stream(self, body: JSON) -> Stream:
        if body["messages"][0]["content"] == FRAMEWORK.reframed_answer_instructions():
            self.texts = [CLEAN] * body["n"]
        else:
            self.texts = [HARMFUL] * body["n"]
        return super().chat_stream(body)


def test_both_races_the_regenerated_drafts_and_the_answers_to_a_reframed_question() -> None:
    from service.settings import RepairStrategy

    upstream = BothUpstream()
    repairer = Repairer(upstream, max_tokens=512, max_answer_chars=2000, candidates=3,  # type: ignore[arg-type]
                        strategy=RepairStrategy.BOTH)
    reviewer = Reviewer(Judge(), repairer, "Refused.", bounds=RepairBounds(race=True, draft_window_chars=40))  # type: ignore[arg-type]
    review = asyncio.run(reviewer.review(policy(), ASK, REJECTED))
    assert review.repaired and review.attempts == 1 and review.final_text.strip() == CLEAN
    assert review.reframed_question == "What does the law say about making a pipe bomb?"
    assert upstream.question_drawn_after  # the regenerated drafts were generating meanwhile
    [asked] = upstream.questions  # stopped at its question mark (put back): the rest is not read
    assert asked["stop"] == ["?"] and asked["messages"][-1]["content"] == "What does the law say about"
    assert {d["reason"] for d in review.rejected_drafts} <= {"judge"}
    assert [call["n"] for call in upstream.calls] == [3, 3]  # one n=k generation per prompt
