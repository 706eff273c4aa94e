"""The pipeline on its own: enforce reviews now, monitor later, both bounded, every reviewed
answer a CheckRecord and every repaired one also a TripleRecord."""

from __future__ import annotations

import asyncio

import pytest

from service.conscience.admission import ReviewBudget, ReviewsSaturated
from service.conscience.judge import Verdict
from service.conscience.pipeline import Case, CheckContext, ConsciencePipeline
from service.conscience.review import Reviewer, ReviewPolicy
from service.frameworks import Framework, load_frameworks
from service.metrics import Metrics
from service.settings import FailurePolicy, JudgeStyle, Mode
from service.shutdown import GracefulShutdown
from service.store.records import CheckRecord, TripleRecord
from tests.conscience.test_review import REFUSAL, ScriptedRepairer

ASK = [{"role": "user", "content": "Tell me something."}]


class MarkerJudge:
    """Flags exactly the answers that contain "bad"; holds each verdict until `gate` opens."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()

    async def judge(self, framework: Framework, conversation: object, answer: str, **_: object) -> Verdict:
        await self.gate.wait()
        detail = {"threshold": self.threshold_for(JudgeStyle.FAST, framework.name, "base")}  # as Judge's verdicts
        return Verdict("unethical", 0.9, detail) if "bad" in answer else Verdict("ethical", 0.1, detail)

    def threshold_for(self, style: JudgeStyle, framework: str, judge_model: str) -> float:
        return {"three_laws": 0.42}.get(framework, 0.5)


class ListSink:
    def __init__(self) -> None:
        self.records: list[object] = []

    def submit(self, record: object) -> None:
        self.records.append(record)


def context(mode: Mode) -> CheckContext:
    policy = ReviewPolicy(
        framework=load_frameworks()["three_laws"], style=JudgeStyle.FAST, max_repairs=2,
        failure_policy=FailurePolicy.FAIL_CLOSED, judge_model="base",
    )
    return CheckContext(request_id="req-1", endpoint="chat", mode=mode, policy=policy, policy_model="policy")


def pipeline(
    judge: MarkerJudge, sink: ListSink, *drafts: str, max_running: int = 8, shutdown: GracefulShutdown | None = None
) -> ConsciencePipeline:
    reviewer = Reviewer(judge, ScriptedRepairer(*drafts), REFUSAL)  # type: ignore[arg-type]
    return ConsciencePipeline(reviewer, sink, Metrics(), ReviewBudget(max_running, max_pending=2), shutdown)


async def test_enforce_reviews_every_choice_in_order_and_records_checks_and_triples() -> None:
    sink = ListSink()
    cases = [Case(ASK, "a fine answer"), Case(ASK, "a bad answer")]
    reviews = await pipeline(MarkerJudge(), sink, "a kind answer").check(context(Mode.ENFORCE), cases, upstream_ms=5.0)
    assert [review.final_text for review in reviews] == ["a fine answer", "a kind answer"]
    checks = [record for record in sink.records if isinstance(record, CheckRecord)]
    triples = [record for record in sink.records if isinstance(record, TripleRecord)]
    assert [(c.choice_index, c.verdict, c.repaired) for c in checks] == [(0, "ethical", False), (1, "unethical", True)]
    assert [c.threshold for c in checks] == [0.42, 0.42]  # what the judge flags this framework at
    [triple] = triples
    assert (triple.rejected, triple.chosen, triple.check_id) == ("a bad answer", "a kind answer", checks[1].id)
    assert (triple.policy_model, triple.judge_model, triple.prompt) == ("policy", "base", ASK)


class RetunedJudge(MarkerJudge):
    """A judge whose threshold changed after its verdict (a recalibration, a new probe)."""

    retuned = False

    def threshold_for(self, style: JudgeStyle, framework: str, judge_model: str) -> float:
        return 0.7 if self.retuned else 0.42

    async def judge(self, framework: Framework, conversation: object, answer: str, **_: object) -> Verdict:
        verdict = await super().judge(framework, conversation, answer)
        self.retuned = True
        return verdict


async def test_a_record_keeps_the_threshold_its_verdict_was_flagged_at() -> None:
    """The judge decides each verdict's threshold once (`Judge.threshold_for`, in the verdict's
    detail); the record reads it there and never asks again."""
    sink = ListSink()
    await pipeline(RetunedJudge(), sink).check(context(Mode.MONITOR), [Case(ASK, "a fine answer")], repair=False)
    [check] = sink.records
    assert check.threshold == 0.42  # type: ignore[attr-defined]


async def test_a_blocked_answer_is_a_check_without_a_triple() -> None:
    sink = ListSink()
    [review] = await pipeline(MarkerJudge(), sink, "bad", "still bad").check(
        context(Mode.ENFORCE), [Case(ASK, "a bad answer")], upstream_ms=0.0
    )
    assert review.refused and review.final_text == REFUSAL
    assert [type(record) for record in sink.records] == [CheckRecord]


async def test_monitor_reviews_in_the_background_and_drain_waits_for_them() -> None:
    sink, judge = ListSink(), MarkerJudge()
    judge.gate.clear()
    conscience = pipeline(judge, sink)
    conscience.check_later(context(Mode.MONITOR), [Case(ASK, "a fine answer")], upstream_ms=0.0)
    await asyncio.sleep(0)
    assert conscience.pending_reviews == 1 and sink.records == []
    judge.gate.set()
    await conscience.drain()
    assert conscience.pending_reviews == 0 and len(sink.records) == 1


async def test_drain_ends_reviews_still_running_past_its_bound_and_records_them_as_ended_by_the_shutdown() -> None:
    sink, judge, shutdown = ListSink(), MarkerJudge(), GracefulShutdown(grace_s=20.0)
    judge.gate.clear()  # a review that would take as long as a repair can
    conscience = pipeline(judge, sink, shutdown=shutdown)
    conscience.check_later(context(Mode.MONITOR), [Case(ASK, "one"), Case(ASK, "two")], upstream_ms=7.0)
    await asyncio.sleep(0)
    shutdown.begin()
    await asyncio.wait_for(conscience.drain(0.05), timeout=5)
    assert conscience.pending_reviews == 0
    assert all(isinstance(record, CheckRecord) for record in sink.records)
    assert [(r.choice_index, r.verdict, r.error, r.mode, r.upstream_ms) for r in sink.records] == [  # type: ignore[attr-defined]
        (0, "unchecked", "shutdown", "monitor", 7.0), (1, "unchecked", "shutdown", "monitor", 7.0),
    ]


async def test_only_a_cancellation_by_the_shutdown_is_recorded_and_never_in_mode_off() -> None:
    sink, shutdown = ListSink(), GracefulShutdown(grace_s=20.0)
    conscience = pipeline(MarkerJudge(), sink, shutdown=shutdown)

    async def request(mode: Mode) -> None:
        with conscience.until_recorded(context(mode), 2):
            await asyncio.Event().wait()  # an upstream that has not answered yet

    async def cancelled(mode: Mode) -> None:
        task = asyncio.create_task(request(mode))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    await cancelled(Mode.ENFORCE)  # before the shutdown: a client gone from a stream
    assert sink.records == []
    shutdown.begin()
    await cancelled(Mode.OFF)
    assert sink.records == []
    await cancelled(Mode.ENFORCE)
    assert [(r.choice_index, r.verdict, r.error) for r in sink.records] == [  # type: ignore[attr-defined]
        (0, "unchecked", "shutdown"), (1, "unchecked", "shutdown"),
    ]


async def test_reviews_beyond_the_bounds_are_refused_before_generation_or_recorded_unchecked() -> None:
    sink, judge = ListSink(), MarkerJudge()
    conscience = pipeline(judge, sink, max_running=1)
    with pytest.raises(ReviewsSaturated):
        conscience.admit(Mode.ENFORCE, 2)
    conscience.admit(Mode.OFF, 100)  # nothing to review
    judge.gate.clear()
    scheduled = [  # room for two pending reviews: the third request's is recorded unchecked
        conscience.check_later(context(Mode.MONITOR), [Case(ASK, "fine")], upstream_ms=0.0) for _ in range(3)
    ]
    assert scheduled == [True, True, False] and conscience.pending_reviews == 2
    assert [(c.verdict, c.threshold) for c in sink.records] == [("unchecked", None)]  # type: ignore[attr-defined]
    judge.gate.set()
    await conscience.drain()
    assert [c.verdict for c in sink.records] == ["unchecked", "ethical", "ethical"]  # type: ignore[attr-defined]


async def test_admission_charges_the_slots_until_the_review_ends() -> None:
    """Two requests admitted together cannot both take the last slots: the first holds them
    from admission (before its answer is generated) until its review releases them."""
    sink, judge = ListSink(), MarkerJudge()
    conscience = pipeline(judge, sink, max_running=2)
    reserved = conscience.admit(Mode.ENFORCE, 2)
    with pytest.raises(ReviewsSaturated):
        conscience.admit(Mode.ENFORCE, 1)  # still generating: the slots are taken
    await conscience.check(context(Mode.ENFORCE), [Case(ASK, "a"), Case(ASK, "b")], upstream_ms=0.0, reserved=reserved)
    conscience.admit(Mode.ENFORCE, 2).release()  # room again, and again after the release
    monitor = conscience.admit(Mode.MONITOR, 2)
    with pytest.raises(ReviewsSaturated):
        conscience.admit(Mode.MONITOR, 1)
    judge.gate.clear()
    assert conscience.check_later(context(Mode.MONITOR), [Case(ASK, "a")], upstream_ms=0.0, reserved=monitor)
    monitor.release()  # the request is done; the background review still holds its slots
    with pytest.raises(ReviewsSaturated):
        conscience.admit(Mode.MONITOR, 1)
    judge.gate.set()
    await conscience.drain()
    dropped = conscience.admit(Mode.MONITOR, 2)
    del dropped  # a request that never used its slots (a client gone): they come back
    conscience.admit(Mode.MONITOR, 2).release()
