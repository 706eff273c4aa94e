"""The enforcement loop (Enforcement): windowed enforce streaming with scripted upstream, judge and repair."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from service.conscience.deltas import streamed_drafts
from service.conscience.engine import Enforcement
from service.conscience.outcome import Review
from service.conscience.refusal import is_refusal

REFUSAL = "I can't help with that."
HARMFUL = "Then break the window with a crowbar at night."
MARKER = "crowbar"


@dataclass(frozen=True)
class Verdict:
    flagged: bool
    score: float | None


class Upstream:
    """Deltas, paced by `delay_s` (0: all at once, faster than any judge); records how far it
    was read and whether it was closed."""

    def __init__(self, deltas: list[str], delay_s: float = 0.001, fail_after: int | None = None) -> None:
        self.deltas = deltas
        self.delay_s = delay_s
        self.fail_after = fail_after
        self.sent = 0
        self.closed = False

    async def stream(self) -> AsyncIterator[str]:
        try:
            for delta in self.deltas:
                if self.fail_after is not None and self.sent >= self.fail_after:
                    raise ConnectionError("upstream went away")
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                self.sent += 1
                yield delta
        finally:
            self.closed = True


class Judge:
    """Flags any answer-so-far containing `marker`; records what it was asked."""

    def __init__(
        self, marker: str = MARKER, delay_s: float = 0.0, fail_on: Callable[[str], bool] | None = None
    ) -> None:
        self.marker = marker
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.calls: list[str] = []

    async def __call__(self, answer: str) -> Verdict:
        self.calls.append(answer)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_on is not None and self.fail_on(answer):
            raise RuntimeError("judge model down")
        flagged = self.marker in answer
        return Verdict(flagged, 0.9 if flagged else 0.05)


class Repair:
    """Attempt i streams `drafts[i]` word by word; records the released text it was given."""

    def __init__(self, *drafts: str, fail: bool = False) -> None:
        self.drafts = list(drafts)
        self.given: list[str] = []
        self.fail = fail
        self.closed = 0

    def __call__(self, released: str, attempt: int) -> AsyncIterator[str]:
        assert attempt == len(self.given) + 1  # the attempts are numbered 1, 2, …
        attempt = len(self.given)
        self.given.append(released)
        return self._stream(self.drafts[attempt] if attempt < len(self.drafts) else "")

    async def _stream(self, text: str) -> AsyncIterator[str]:
        try:
            if self.fail:
                raise ConnectionError("repairer went away")
            for word in words(text):
                await asyncio.sleep(0.001)
                yield word
        finally:
            self.closed += 1


def words(text: str) -> list[str]:
    """Word-sized deltas that keep their trailing space, like a tokenizer's output."""
    parts = text.split(" ")
    return [part + " " for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def review(upstream: Upstream, judge: Judge, repair: Repair | None = None, **options: object) -> Enforcement:
    defaults: dict[str, object] = {"window_chars": 20, "refusal": REFUSAL, "max_repairs": 2}
    return Enforcement(
        upstream.stream(), judge=judge, drafts=streamed_drafts(repair or Repair()), **{**defaults, **options}
    )


async def collect(reviewed: Enforcement) -> list[str]:
    return [text async for text in reviewed]


def assert_consistent(pieces: list[str], summary: Review) -> None:
    assert "".join(pieces) == summary.released
    assert [w.index for w in summary.windows] == list(range(len(summary.windows)))


# --- passing answers ---------------------------------------------------------------------------


async def test_a_clean_answer_is_released_whole_in_windows_each_judged_with_all_before_it() -> None:
    answer = "Knead the dough for ten minutes, let it rise for an hour, then bake it at 220 degrees."
    judge = Judge()
    reviewed = review(Upstream(words(answer)), judge)
    pieces = await collect(reviewed)
    summary = reviewed.outcome
    assert "".join(pieces) == answer
    assert summary.action == "passed" and summary.flagged_window is None and summary.attempts == 0
    assert len(pieces) == len(summary.windows) >= 4
    assert judge.calls[-1] == answer  # the tail is judged, as part of the whole answer
    released = ""
    for piece, call in zip(pieces, judge.calls, strict=True):
        assert call == released + piece  # the answer so far, never a window alone
        released += piece
    # A window ends on a word boundary and holds at least one window of text, the tail apart.
    assert all(piece.endswith(" ") and len(piece) >= 20 for piece in pieces[:-1])
    assert summary.scores == [0.05] * len(pieces) and summary.score == 0.05
    assert_consistent(pieces, summary)


async def test_with_a_bounded_context_judging_costs_the_answers_length_not_its_square() -> None:
    sentence = "Knead the dough for ten minutes, then let it rise for an hour. "
    answer = sentence * 60  # 3,840 characters in 20-character windows
    whole, bounded = Judge(), Judge()
    assert "".join(await collect(review(Upstream(words(answer)), whole))) == answer
    pieces = await collect(review(Upstream(words(answer)), bounded, judge_context_chars=100))
    assert "".join(pieces) == answer and len(bounded.calls) == len(pieces)
    released = ""
    for piece, call in zip(pieces, bounded.calls, strict=True):
        if len(released) <= 100:
            assert call == released + piece
        else:  # the window, after the last words released before it (from a word boundary)
            assert call.startswith("…") and call.endswith(piece)
            before = call[1 : len(call) - len(piece)]
            assert released.endswith(before) and 80 <= len(before) <= 100 and not before.startswith(" ")
        released += piece
    judged_whole = sum(map(len, whole.calls))
    judged_bounded = sum(map(len, bounded.calls))
    assert judged_whole > 40 * len(answer)  # quadratic: every window re-reads all before it
    assert judged_bounded < 8 * len(answer)  # linear: each window reads at most 100 more


async def test_a_harm_split_across_windows_is_still_seen_with_a_bounded_context() -> None:
    phrase = "then buy a crowbar"  # flagged only whole; the 8-character windows split it
    answer = "Noise is hard to live with, so write down when it happens each day. " * 3 + phrase + " now."
    for context, seen in ((60, True), (0, False)):
        judge = Judge(marker=phrase)
        reviewed = review(Upstream(words(answer)), judge, judge_context_chars=context, window_chars=8)
        released = "".join(await collect(reviewed))
        assert (phrase not in released) is seen
        assert (reviewed.outcome.flagged_window is not None) is seen


async def test_nothing_is_released_before_a_window_has_filled_and_passed() -> None:
    gate = asyncio.Event()
    released: list[str] = []

    class GatedJudge(Judge):
        async def __call__(self, answer: str) -> Verdict:
            await gate.wait()
            return await super().__call__(answer)

    reviewed = review(Upstream(words("one two three four five six seven eight nine ten")), GatedJudge())

    async def consume() -> None:
        async for text in reviewed:
            released.append(text)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)  # the whole upstream has arrived, the judge is still thinking
    assert released == []
    gate.set()
    await task
    assert "".join(released) == "one two three four five six seven eight nine ten"


async def test_a_short_answer_is_one_window_the_tail_and_an_empty_one_is_still_judged() -> None:
    judge = Judge()
    reviewed = review(Upstream(["Hi ", "there."], delay_s=0), judge)
    assert await collect(reviewed) == ["Hi there."]
    assert judge.calls == ["Hi there."] and len(reviewed.outcome.windows) == 1

    judge = Judge()
    empty = review(Upstream([]), judge)
    assert await collect(empty) == []
    assert judge.calls == [""] and empty.outcome.action == "passed"


async def test_an_answer_ending_on_a_window_boundary_gets_no_extra_verdict() -> None:
    judge = Judge()
    text = "abcdefghi " * 2  # exactly one 20-character window
    reviewed = review(Upstream([text]), judge)
    assert await collect(reviewed) == [text]
    assert judge.calls == [text]


async def test_text_that_arrives_faster_than_the_judge_is_judged_in_one_window() -> None:
    judge = Judge()
    text = "word " * 30 + "end"
    reviewed = review(Upstream([text]), judge)
    assert "".join(await collect(reviewed)) == text
    assert judge.calls == [text]


async def test_a_word_longer_than_the_window_is_released_whole() -> None:
    judge = Judge()
    text = "x" * 50 + " done"
    reviewed = review(Upstream(list(text)), judge, window_chars=10)
    assert "".join(await collect(reviewed)) == text
    assert judge.calls[0] == "x" * 10  # no whitespace to cut at: the window as it is


async def test_a_slow_judge_takes_bigger_windows_instead_of_falling_behind() -> None:
    fast_judge, slow_judge = Judge(), Judge(delay_s=0.05)
    answer = words("lorem ipsum dolor sit amet " * 8)
    await collect(review(Upstream(answer, delay_s=0.002), fast_judge))
    await collect(review(Upstream(answer, delay_s=0.002), slow_judge))
    assert len(slow_judge.calls) < len(fast_judge.calls)


async def test_generation_goes_on_while_the_judge_works() -> None:
    answer = words("a b c d e f g h i j k l m n o p q r s t u v w x y z " * 2)
    clock = asyncio.get_running_loop().time

    async def timed(judge: Judge) -> float:
        started = clock()
        await collect(review(Upstream(answer, delay_s=0.005), judge, window_chars=10))
        return clock() - started

    generation = await timed(Judge())
    slow = Judge(delay_s=0.03)
    with_verdicts = await timed(slow)
    assert len(slow.calls) >= 5  # one after the other, they would add 150 ms or more
    assert with_verdicts - generation < 0.03 * 3  # about one verdict, the tail's, is added


# --- flagged answers ---------------------------------------------------------------------------


async def test_a_harmful_sentence_mid_stream_is_never_released_and_the_repair_continues() -> None:
    before = "First, talk to your neighbour about the noise. "
    after = " Finally, leave quietly."
    upstream = Upstream(words(before + HARMFUL + after), delay_s=0.001)
    repair = Repair("If that fails, contact your local mediation service.")
    reviewed = review(upstream, Judge(), repair)
    pieces = await collect(reviewed)
    summary = reviewed.outcome
    out = "".join(pieces)
    assert MARKER not in out and "break the window" not in out and "Finally" not in out
    assert out.startswith("First, talk to your")
    assert repair.given == [out[: len(repair.given[0])]]  # continued from what was released
    assert out == repair.given[0] + "If that fails, contact your local mediation service."
    assert summary.action == "repaired" and summary.attempts == 1
    assert summary.flagged_window is not None
    flagged = summary.windows[summary.flagged_window]
    assert flagged.flagged and flagged.stage == "answer" and flagged.score == 0.9
    assert all(not w.flagged for w in summary.windows if w.stage == "repair")
    assert summary.answer is not None and MARKER in summary.answer
    assert upstream.closed and upstream.sent < len(upstream.deltas)  # stopped, not read to the end
    assert_consistent(pieces, summary)


async def test_a_flag_in_the_first_window_releases_nothing_and_regenerates() -> None:
    upstream = Upstream(words(HARMFUL + " More text follows here."))
    repair = Repair("Talk to your neighbour first.")
    reviewed = review(upstream, Judge(), repair, window_chars=60)  # the harm is in the first one
    assert "".join(await collect(reviewed)) == "Talk to your neighbour first."
    assert repair.given == [""]  # nothing released: a regeneration
    assert reviewed.outcome.flagged_window == 0 and reviewed.outcome.action == "repaired"


async def test_a_flag_in_the_tail_releases_every_window_before_it() -> None:
    clean = "Bake the bread at two hundred degrees. "
    upstream = Upstream(words(clean + "Use a " + MARKER))
    repair = Repair("Enjoy it warm.")
    reviewed = review(upstream, Judge(), repair)
    out = "".join(await collect(reviewed))
    assert MARKER not in out and out.endswith("Enjoy it warm.")
    assert out.startswith("Bake the bread")
    assert repair.given[0] == out.removesuffix("Enjoy it warm.")


async def test_a_flagged_repair_is_stopped_and_the_next_attempt_continues_from_its_released_part() -> None:
    upstream = Upstream(words("Step one is fine and harmless. " + HARMFUL))
    repair = Repair(
        "Step two is also fine, and step three uses a crowbar.",
        "Step three is to call a locksmith.",
    )
    reviewed = review(upstream, Judge(), repair)
    out = "".join(await collect(reviewed))
    summary = reviewed.outcome
    assert MARKER not in out and out.endswith("Step three is to call a locksmith.")
    assert summary.action == "repaired" and summary.attempts == 2
    assert len(repair.given) == 2 and repair.given[1].startswith(repair.given[0])
    assert len(repair.given[1]) > len(repair.given[0])  # the first repair's clean part stayed
    assert [d.reason for d in summary.drafts] == ["judge"] and summary.drafts[0].score == 0.9
    assert repair.closed == 2


async def test_when_no_repair_passes_the_answer_ends_with_the_refusal() -> None:
    upstream = Upstream(words("Fine words come first here. " + HARMFUL))
    repair = Repair(HARMFUL, "Another " + MARKER + " plan.")
    reviewed = review(upstream, Judge(), repair)
    pieces = await collect(reviewed)
    summary = reviewed.outcome
    out = "".join(pieces)
    assert MARKER not in out and out.endswith("\n\n" + REFUSAL)
    assert out.startswith("Fine words come first")
    assert summary.action == "refused" and summary.attempts == 2
    assert [d.reason for d in summary.drafts] == ["judge", "judge"]
    assert_consistent(pieces, summary)


async def test_nothing_released_and_no_repair_gives_the_refusal_alone() -> None:
    reviewed = review(Upstream([HARMFUL]), Judge(), Repair(), max_repairs=0)
    assert await collect(reviewed) == [REFUSAL]
    assert reviewed.outcome.action == "refused" and reviewed.outcome.attempts == 0


async def test_an_empty_or_refusing_repair_is_discarded_before_the_judge() -> None:
    judge = Judge()
    repair = Repair("", "I'm sorry, but I can't help with that request.", "Ask the council for help.")
    reviewed = review(
        Upstream([HARMFUL]), judge, repair, max_repairs=3, reject_draft=lambda opening, _question: is_refusal(opening)
    )
    assert "".join(await collect(reviewed)) == "Ask the council for help."
    assert [d.reason for d in reviewed.outcome.drafts] == ["empty", "refusal"]
    assert not any("sorry" in call for call in judge.calls)


async def test_the_draft_filter_names_why_a_draft_is_discarded() -> None:
    repair = Repair("Copy of the rejected answer.", "Ask the council for help.")
    reviewed = review(
        Upstream([HARMFUL]), Judge(), repair,
        reject_draft=lambda opening, _question: "near_copy" if opening.startswith("Copy") else None,
    )
    assert "".join(await collect(reviewed)) == "Ask the council for help."
    [draft] = reviewed.outcome.drafts
    assert draft.reason == "near_copy" and draft.text.startswith("Copy of")


async def test_the_deltas_released_whole_are_counted_the_refusal_not() -> None:
    opening = "Good start here, friend. "
    reviewed = review(Upstream(words(opening + HARMFUL)), Judge(), Repair("Ask the council for help."))
    await collect(reviewed)
    summary = reviewed.outcome
    assert summary.action == "repaired" and summary.released.startswith(opening)
    assert summary.released_deltas == len(words(summary.released))  # windows end between words
    refused = review(Upstream(words(opening + HARMFUL)), Judge(), Repair(), max_repairs=0)
    await collect(refused)
    kept = refused.outcome.released.removesuffix(REFUSAL).rstrip("\n")
    assert kept.startswith(opening) and refused.outcome.released_deltas == len(words(kept))


async def test_a_failing_repair_refuses() -> None:
    reviewed = review(Upstream(words("Good start here, friend. " + HARMFUL)), Judge(), Repair(fail=True))
    out = "".join(await collect(reviewed))
    assert MARKER not in out and out.endswith(REFUSAL)
    assert reviewed.outcome.action == "refused" and "repair failed" in (reviewed.outcome.error or "")


# --- failures and the client leaving ---------------------------------------------------------------


async def test_a_judge_failure_refuses_when_failing_closed() -> None:
    upstream = Upstream(words("Good start here, friend. And then more words follow."))
    judge = Judge(fail_on=lambda answer: "more" in answer)
    reviewed = review(upstream, judge)
    out = "".join(await collect(reviewed))
    assert "more" not in out and out.endswith(REFUSAL)
    assert reviewed.outcome.action == "refused" and "judge failed" in (reviewed.outcome.error or "")
    assert upstream.closed


async def test_a_judge_failure_releases_the_rest_unjudged_when_failing_open() -> None:
    answer = "Good start here, friend. And then more words follow, to the end."
    judge = Judge(fail_on=lambda answer: "more" in answer)
    reviewed = review(Upstream(words(answer), delay_s=0.001), judge, fail_open=True)
    assert "".join(await collect(reviewed)) == answer
    assert reviewed.outcome.action == "unchecked"


async def test_a_judge_failure_on_a_repair_refuses_whatever_the_failure_policy() -> None:
    judge = Judge(fail_on=lambda answer: "council" in answer)
    reviewed = review(Upstream([HARMFUL]), judge, Repair("Ask the council."), fail_open=True)
    assert await collect(reviewed) == [REFUSAL]
    assert reviewed.outcome.action == "refused"


async def test_an_upstream_failure_is_raised_and_its_unjudged_text_never_released() -> None:
    upstream = Upstream(words("one two three four five six seven eight nine ten"), fail_after=7)
    reviewed = review(upstream, Judge())
    pieces: list[str] = []
    with pytest.raises(ConnectionError):
        async for text in reviewed:
            pieces.append(text)
    assert "".join(pieces) == reviewed.outcome.released
    assert "seven" not in reviewed.outcome.released
    assert reviewed.outcome.action is None and "upstream failed" in (reviewed.outcome.error or "")


async def test_a_client_leaving_early_closes_the_upstream() -> None:
    upstream = Upstream(words("lorem ipsum dolor sit amet " * 20), delay_s=0.001)
    reviewed = review(upstream, Judge())
    stream = aiter(reviewed)
    await anext(stream)
    await stream.aclose()
    assert upstream.closed and upstream.sent < len(upstream.deltas)


async def test_a_client_leaving_mid_repair_closes_the_repair() -> None:
    repair = Repair("Calm words that go on and on and on for quite a long while yet.")
    reviewed = review(Upstream([HARMFUL]), Judge(), repair, window_chars=5)
    stream = aiter(reviewed)
    await anext(stream)
    await stream.aclose()
    assert repair.closed == 1


def test_the_window_must_hold_a_character() -> None:
    with pytest.raises(ValueError):
        review(Upstream([]), Judge(), window_chars=0)


async def test_the_summary_on_the_wire() -> None:
    reviewed = review(Upstream([HARMFUL]), Judge(delay_s=0.02), Repair("Ask the council."))
    await collect(reviewed)
    wire = reviewed.outcome.wire().model_dump()
    timed = wire.pop("verdict_ms")
    assert wire == {
        "windows": 2, "flagged_window": 0, "action": "repaired", "attempts": 1, "scores": [0.9, 0.05],
    }
    # Each verdict's time: how long it held its window back (the judge here takes 20 ms).
    assert len(timed) == 2 and all(15.0 <= ms < 1000.0 for ms in timed)
    assert sum(timed) == pytest.approx(reviewed.outcome.judge_ms, abs=0.2)
