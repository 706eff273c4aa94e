"""The draft sources of the one repair loop (service/conscience/engine.py), over the repairer.

- `candidate_drafts`: a buffered answer's repair — each attempt's candidates, drafted from the
  request alone by the attempt's strategy (regenerate or reframe: service/conscience/repair.py),
  each a whole draft judged in one window;
- `raced_candidates`: the same candidates as one streamed `n=k` generation, raced: each judged
  as it is generated, the first that ends clean accepted and the others stopped (a repair costs
  about one generation, not k);
- `streamed_draft`: a windowed stream's repair — one streamed draft per attempt, continuing
  the text the client already has, or drafted from the request (regenerate or reframe) when
  it has none.

All draft from the request with the rejected answer out of view, so a small model cannot copy
it; the loop discards, judges and accepts what they yield.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from service.conscience import usage
from service.conscience.bounds import DraftLimits, RepairBudget
from service.conscience.engine import Draft, DraftSource, one_chunk
from service.conscience.fencing import unwrap_echoed_fences
from service.conscience.repair import Repairer
from service.core.backend import JSON
from service.frameworks import Framework

# The released (judged) text -> the part of it a repair continues, and what joins the repair to it.
Continued = Callable[[str], tuple[str, str]]


def candidate_drafts(
    repairer: Repairer, framework: Framework, conversation: list[JSON], *, judge_model: str,
    limits: DraftLimits = DraftLimits(), budget: RepairBudget | None = None,
) -> DraftSource:
    """Each attempt's `Repairer.candidates`, in order, as whole drafts."""

    async def drafts(released: str, attempt: int) -> AsyncIterator[Draft]:
        candidates = await repairer.candidates(
            framework, conversation, judge_model=judge_model, attempt=attempt, limits=limits, budget=budget
        )
        for candidate in candidates:
            ended = candidate.ended_by_itself
            yield Draft(one_chunk(candidate.text), whole=True, question=candidate.question,
                        ended_by_itself=lambda ended=ended: ended)

    return drafts


def raced_candidates(
    repairer: Repairer, framework: Framework, conversation: list[JSON], *, judge_model: str,
    limits: DraftLimits = DraftLimits(), budget: RepairBudget | None = None,
) -> DraftSource:
    """Each attempt's `Repairer.candidate_streams`, each yielded as soon as it can start, to be
    raced (`parallel`)."""

    async def drafts(released: str, attempt: int) -> AsyncIterator[Draft]:
        async with contextlib.aclosing(repairer.candidate_streams(
            framework, conversation, judge_model=judge_model, attempt=attempt, limits=limits, budget=budget
        )) as streams:
            async for candidate in streams:
                stream = candidate.deltas
                yield Draft(stream, whole=True, question=candidate.question, parallel=True,
                            ended_by_itself=lambda stream=stream: stream.ended_by_itself,
                            cleaned=unwrap_echoed_fences,
                            on_accepted=lambda stream=stream: usage.accepted_repair(stream.deltas))

    return drafts


def streamed_draft(
    repairer: Repairer, framework: Framework, conversation: list[JSON], *, judge_model: str,
    rejected: Callable[[], str], continued: Continued | None, question_is_echo: Callable[[str], bool],
    limits: DraftLimits = DraftLimits(), budget: RepairBudget | None = None,
    released_tokens: Callable[[], int] = lambda: 0,
) -> DraftSource:
    """One streamed draft per attempt (`Repairer.repair_stream`): `rejected()` is the answer as
    far as it was read; `continued(released)`: when the judged text is more than the answer's
    own (a chat answer's reasoning, rendered as the judge reads it), the part of `released` a
    repair continues and the text that joins the repair to it (service/api/windowed_stream.py);
    `released_tokens()`: the client's tokens the released text took (of its max tokens)."""

    async def drafts(released: str, attempt: int) -> AsyncIterator[Draft]:
        own, lead = continued(released) if continued is not None else (released, "")
        deltas = repairer.repair_stream(
            framework, conversation, rejected(), judge_model=judge_model, released=own, attempt=attempt,
            question_is_echo=question_is_echo, limits=limits, budget=budget, released_tokens=released_tokens(),
        )
        yield Draft(_led(lead, deltas) if lead else deltas)

    return drafts


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
