"""The draft sources of the one repair loop (service/conscience/engine.py), over the repairer.

- `candidate_drafts`: a buffered answer's repair — each attempt's candidates, drafted from the
  request alone by the attempt's strategy (regenerate or reframe: service/conscience/repair.py),
  each a whole draft judged in one window;
- `streamed_draft`: a windowed stream's repair — one streamed draft per attempt, continuing
  the text the client already has, or drafted from the request (regenerate or reframe) when
  it has none.

Both draft from the request with the rejected answer out of view, so a small model cannot copy
it; the loop discards, judges and accepts what they yield.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from service.conscience.engine import Draft, DraftSource, one_chunk
from service.conscience.repair import Repairer
from service.core.backend import JSON
from service.frameworks import Framework

# The released (judged) text -> the part of it a repair continues, and what joins the repair to it.
Continued = Callable[[str], tuple[str, str]]


def candidate_drafts(
    repairer: Repairer, framework: Framework, conversation: list[JSON], *, judge_model: str
) -> DraftSource:
    """Each attempt's `Repairer.candidates`, in order, as whole drafts."""

    async def drafts(released: str, attempt: int) -> AsyncIterator[Draft]:
        candidates = await repairer.candidates(framework, conversation, judge_model=judge_model, attempt=attempt)
        for candidate in candidates:
            yield Draft(one_chunk(candidate.text), whole=True, question=candidate.question)

    return drafts


def streamed_draft(
    repairer: Repairer, framework: Framework, conversation: list[JSON], *, judge_model: str,
    rejected: Callable[[], str], continued: Continued | None, question_is_echo: Callable[[str], bool],
) -> DraftSource:
    """One streamed draft per attempt (`Repairer.repair_stream`): `rejected()` is the answer as
    far as it was read; `continued(released)`: when the judged text is more than the answer's
    own (a chat answer's reasoning, rendered as the judge reads it), the part of `released` a
    repair continues and the text that joins the repair to it (service/api/windowed_stream.py)."""

    async def drafts(released: str, attempt: int) -> AsyncIterator[Draft]:
        own, lead = continued(released) if continued is not None else (released, "")
        deltas = repairer.repair_stream(
            framework, conversation, rejected(), judge_model=judge_model, released=own, attempt=attempt,
            question_is_echo=question_is_echo,
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
