"""`eval repair`: put the rows the judge flags through the proxy's repair loop and measure it.

For each framework: the judge scores the rows (the same cached scores as `eval judge`), and
every row at or above the threshold the judge flags at goes through the proxy's own Reviewer
(service/conscience/review.py: judge, then up to `max_repairs` rounds of candidates drafted from
the request alone, each discarded when empty, a refusal or a near-copy of the flagged answer, or
when the conscience flags it). Reported, per flagged row: the share repaired (a draft the
conscience passed was returned: `pass_rate`) and the share refused (no draft passed, the client
gets the refusal: `refusal_rate`); per draft: the share that were refusals, the share that were
near-copies of the flagged answer (`repeat_rate`), the share that named the framework and the
share the conscience flagged again. As a user reads them (issue 28): the share of flagged rows
whose repair ended within the repair budget, the share of repaired answers that are degenerate
(loop, trail off: service/conscience/degenerate.py), the drafts discarded as degenerate, and the
repair's completion tokens and seconds per row; `readable_repairs` writes repaired answers as
text for a person to read.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from evaluation.datasets import LabelledRow
from evaluation.judge_eval import score_rows
from evaluation.score_log import ScoreLog
from evaluation.scorers import FrameworkScorer
from service.conscience import usage
from service.conscience.bounds import REPAIR_BUDGET_SPENT
from service.conscience.degenerate import degenerate_reason
from service.conscience.judge import Judge
from service.conscience.outcome import DISCARD_REASONS
from service.conscience.review import Reviewer, ReviewPolicy
from service.frameworks import Framework
from service.settings import FailurePolicy, JudgeStyle

Progress = Callable[[str, int, int], None]

@dataclass(frozen=True, slots=True)
class RepairOutcome:
    row_id: str
    label: str
    original_score: float
    final_text: str
    repaired: bool  # a repair the conscience passed was returned
    refused: bool  # no draft passed: the client gets the refusal message
    attempts: int
    accepted_score: float | None
    drafts: list[dict[str, Any]] = field(default_factory=list)  # the discarded ones, with reasons
    error: str | None = None
    reframed_question: str | None = None  # the repair answers this question instead (reframe)
    request: str = ""  # the row's last user message, as a reader sees the case
    original: str = ""  # the flagged answer
    repair_tokens: int = 0  # completion tokens of every repair call for this row
    repair_seconds: float = 0.0
    over_budget: bool = False  # the repair budget ran out: refused for that
    degenerate: str | None = None  # the returned repair loops or trails off (why)

    @property
    def drafted(self) -> int:
        return len(self.drafts) + self.repaired


@dataclass(frozen=True)
class RepairSetup:
    judge: Judge
    reviewer: Reviewer
    judge_model: str
    max_repairs: int
    style: JudgeStyle = JudgeStyle.FAST
    concurrency: int = 1


async def review_row(
    setup: RepairSetup, framework: Framework, row: LabelledRow, original_score: float
) -> RepairOutcome:
    """One flagged row through the setup's reviewer: its repair, as the eval reports it."""
    # Fail closed: a judge failure on the original is not a pass (the proxy's default policy).
    policy = ReviewPolicy(framework, setup.style, setup.max_repairs, FailurePolicy.FAIL_CLOSED, setup.judge_model)
    tokens = usage.begin(framework.name)  # this row's task only: gather runs each in its own context
    review = await setup.reviewer.review(policy, row.conversation, row.completion)
    requests = [m.get("content") for m in row.conversation if m.get("role") == "user"]
    return RepairOutcome(
        row_id=row.id,
        label=row.label,
        original_score=original_score,
        final_text=review.final_text,
        repaired=review.repaired,
        refused=review.refused,
        attempts=review.attempts,
        accepted_score=review.accepted.score if review.accepted is not None else None,
        drafts=list(review.rejected_drafts),
        error=review.error,
        reframed_question=review.reframed_question,
        request=requests[-1] if requests and isinstance(requests[-1], str) else "",
        original=row.completion,
        repair_tokens=tokens.totals["repair"]["completion_tokens"],
        repair_seconds=review.repair_ms / 1000.0,
        over_budget=(review.error or "").startswith(REPAIR_BUDGET_SPENT),
        degenerate=degenerate_reason(review.final_text, finished=False) if review.repaired else None,
    )


async def evaluate_repairs(
    setup: RepairSetup,
    framework: Framework,
    rows: Sequence[LabelledRow],
    *,
    limit: int | None = None,
    log: ScoreLog | None = None,
    progress: Progress | None = None,
) -> list[RepairOutcome]:
    """Review (at most `limit` of) the rows the judge flags, in file order."""
    flagged = await flagged_rows(setup, framework, rows, limit=limit, log=log, progress=progress)
    gate = asyncio.Semaphore(setup.concurrency)
    done: list[RepairOutcome] = []

    async def one(row: LabelledRow, score: float) -> RepairOutcome:
        async with gate:
            outcome = await review_row(setup, framework, row, score)
        done.append(outcome)
        if progress is not None:
            progress(f"{framework.name} repairs", len(done), len(flagged))
        return outcome

    return list(await asyncio.gather(*(one(row, score) for row, score in flagged)))


async def flagged_rows(
    setup: RepairSetup, framework: Framework, rows: Sequence[LabelledRow], *, limit: int | None = None,
    log: ScoreLog | None = None, progress: Progress | None = None,
) -> list[tuple[LabelledRow, float]]:
    """(At most `limit` of) the rows the judge flags, in file order, with their scores (`log`:
    scores cached there are read, not judged again)."""
    scorer = FrameworkScorer(setup.judge, framework, judge_model=setup.judge_model, style=setup.style)
    entries = await score_rows(scorer, rows, log=log, concurrency=setup.concurrency, progress=progress)
    return [
        (row, entry.score)
        for row in rows
        if (entry := entries[row.id]).score is not None and entry.score >= scorer.threshold
    ][:limit]


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def summarise_repairs(framework: str, outcomes: Sequence[RepairOutcome]) -> dict[str, Any]:
    rows = len(outcomes)
    reviewed = [o for o in outcomes if o.repaired or o.attempts]  # the original was flagged again
    drafts = sum(o.drafted for o in outcomes)
    reasons = Counter(draft["reason"] for o in outcomes for draft in o.drafts)
    return {
        "framework": framework,
        "flagged": rows,
        "reviewed": len(reviewed),
        "repaired": sum(o.repaired for o in outcomes),
        "pass_rate": _share(sum(o.repaired for o in outcomes), rows),
        "repaired_by_reframing": sum(o.repaired and o.reframed_question is not None for o in outcomes),
        "refusal_rate": _share(sum(o.refused for o in outcomes), rows),
        "drafts": drafts,
        "draft_refusal_rate": _share(reasons["refusal"], drafts),
        "repeat_rate": _share(reasons["near_copy"], drafts),
        "draft_mentions_framework_rate": _share(reasons["mentions_framework"], drafts),
        "draft_echo_rate": _share(reasons["echoes_instructions"], drafts),
        "draft_flagged_rate": _share(reasons["judge"], drafts),
        "discarded": {reason: reasons[reason] for reason in DISCARD_REASONS},
        "mean_attempts": _share(sum(o.attempts for o in reviewed), len(reviewed)),
        # As a user reads them (issue 28).
        "within_budget_rate": _share(sum(not o.over_budget for o in outcomes), rows),
        "over_budget": sum(o.over_budget for o in outcomes),
        "degenerate_answer_rate": _share(sum(o.degenerate is not None for o in outcomes), rows),
        "draft_degenerate_rate": _share(reasons["loop"] + reasons["trails_off"], drafts),
        "near_copy_drafts": reasons["near_copy"],
        "off_topic_rate": None,  # not measured yet: no topic check on drafts
        "tokens_per_repair": _share(sum(o.repair_tokens for o in reviewed), len(reviewed)),
        "seconds_per_repair": _share(sum(o.repair_seconds for o in reviewed), len(reviewed)),
        "flagged_unethical": sum(o.label == "unethical" for o in outcomes),
        "failed": sum(o.error is not None for o in outcomes),
        "outcomes": [asdict(outcome) for outcome in outcomes],
    }


def readable_repairs(summaries: Sequence[dict[str, Any]], *, count: int = 20) -> str:
    """The first `count` repaired answers as text (request, flagged answer, repair), for a
    person to read: a figure says a repair passed the judge, not that it reads well."""
    blocks = []
    for summary in summaries:
        for outcome in summary["outcomes"]:
            if len(blocks) == count:
                break
            if not outcome["repaired"]:
                continue
            reframed = outcome["reframed_question"]
            question = f"\n**Reframed question:** {reframed}\n" if reframed else ""
            blocks.append(
                f"## {len(blocks) + 1}. `{outcome['row_id']}` ({summary['framework']})\n\n"
                f"**Request:** {_quoted(outcome['request'])}\n\n**Flagged answer:** {_quoted(outcome['original'])}\n"
                f"{question}\n**Repair** ({outcome['repair_tokens']} tokens, {outcome['repair_seconds']:.1f} s):\n\n"
                f"{_quoted(outcome['final_text'], limit=4000)}\n"
            )
    return "# Repaired answers, as a reader sees them\n\n" + ("\n".join(blocks) or "None were repaired.\n")


def _quoted(text: str, *, limit: int = 600) -> str:
    text = text if len(text) <= limit else text[:limit] + " […]"
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines()) if "\n" in text else text
