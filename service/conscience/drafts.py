"""The draft sources of the one repair loop (service/conscience/engine.py), over the repairer.

- `CandidateDrafts`: a buffered answer's repair — each attempt's candidates, drafted from the
  request alone by the attempt's strategy (regenerate or reframe: service/conscience/repair.py),
  each a whole draft judged in one window;
- `RacedCandidates`: the same candidates as one streamed `n=k` generation, raced: each judged
  as it is generated, the first that ends clean accepted and the others stopped (a repair costs
  about one generation, not k);
- `StreamedDraft`: a windowed stream's repair — one streamed draft per attempt, continuing
  the text the client already has, or drafted from the request (regenerate or reframe) when
  it has none.

All draft from the request (`RepairCase`) with the rejected answer out of view, so a small model
cannot copy it; the loop discards, judges and accepts what they yield.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from service.conscience import usage
from service.conscience.bounds import DraftLimits, RepairBudget
from service.conscience.deltas import Draft, one_chunk
from service.conscience.fencing import unwrap_echoed_fences
from service.conscience.repair import Repairer
from service.core.backend import JSON
from service.frameworks import Framework

# The released (judged) text -> the part of it a repair continues, and what joins the repair to it.
Continued = Callable[[str], tuple[str, str]]


@dataclass(frozen=True, slots=True)
class RepairCase:
    """What every draft of one answer's repair is drafted from and bounded by."""

    framework: Framework
    conversation: list[JSON]
    judge_model: str
    limits: DraftLimits = DraftLimits()
    budget: RepairBudget | None = None


class CandidateDrafts:
    """Each attempt's `Repairer.candidates`, in order, as whole drafts."""

    def __init__(self, repairer: Repairer, case: RepairCase) -> None:
        self._repairer = repairer
        self._case = case

    async def __call__(self, released: str, attempt: int) -> AsyncIterator[Draft]:
        case = self._case
        candidates = await self._repairer.candidates(
            case.framework, case.conversation, judge_model=case.judge_model, attempt=attempt, limits=case.limits,
            budget=case.budget,
        )
        for candidate in candidates:
            ended = candidate.ended_by_itself
            yield Draft(one_chunk(candidate.text), whole=True, question=candidate.question,
                        ended_by_itself=lambda ended=ended: ended)


class RacedCandidates:
    """Each attempt's `Repairer.candidate_streams`, each yielded as soon as it can start, to be
    raced (`parallel`)."""

    def __init__(self, repairer: Repairer, case: RepairCase) -> None:
        self._repairer = repairer
        self._case = case

    async def __call__(self, released: str, attempt: int) -> AsyncIterator[Draft]:
        case = self._case
        async with contextlib.aclosing(self._repairer.candidate_streams(
            case.framework, case.conversation, judge_model=case.judge_model, attempt=attempt, limits=case.limits,
            budget=case.budget,
        )) as streams:
            async for candidate in streams:
                stream = candidate.deltas
                yield Draft(stream, whole=True, question=candidate.question, parallel=True,
                            ended_by_itself=lambda stream=stream: stream.ended_by_itself,
                            cleaned=unwrap_echoed_fences,
                            on_accepted=lambda stream=stream: usage.accepted_repair(stream.deltas))


class StreamedDraft:
    """One streamed draft per attempt (`Repairer.repair_stream`)."""

    def __init__(
        self, repairer: Repairer, case: RepairCase, *, rejected: Callable[[], str], continued: Continued | None,
        question_is_echo: Callable[[str], bool], released_tokens: Callable[[], int] = lambda: 0,
    ) -> None:
        """`rejected()` is the answer as far as it was read; `continued(released)`: when the
        judged text is more than the answer's own (a chat answer's reasoning, rendered as the
        judge reads it), the part of `released` a repair continues and the text that joins the
        repair to it (service/api/windowed_stream.py); `released_tokens()`: the client's tokens
        the released text took (of its max tokens)."""
        self._repairer = repairer
        self._case = case
        self._rejected = rejected
        self._continued = continued
        self._question_is_echo = question_is_echo
        self._released_tokens = released_tokens

    async def __call__(self, released: str, attempt: int) -> AsyncIterator[Draft]:
        case = self._case
        own, lead = self._continued(released) if self._continued is not None else (released, "")
        deltas = self._repairer.repair_stream(
            case.framework, case.conversation, self._rejected(), judge_model=case.judge_model, released=own,
            attempt=attempt, question_is_echo=self._question_is_echo, limits=case.limits, budget=case.budget,
            released_tokens=self._released_tokens(),
        )
        yield Draft(_led(lead, deltas) if lead else deltas)


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
