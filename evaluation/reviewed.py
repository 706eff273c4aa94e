"""Reviewers teach the judge: reviewed records read back from the store as labelled rows.

Every review decision in the console, the CLI or the admin API is a label on the served model's
own output, judged by this deployment's judge. `reviewed_rows` reads them (SQLite or PostgreSQL,
through the store's repository) as `LabelledRow`s and splits them into a part to fit on and a
part held out, by prompt: `conscience calibrate --reviewed` refits the judge on the first and
measures the configured and the refitted judge on the second.

Only answers the judge flagged are reviewed (triples and blocked answers), so the reviewed rows
say where among the flagged answers the false alarms lie; the rows below the threshold (the
misses, and most harmless answers) come from the labelled data file(s) given beside them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evaluation.datasets import LabelledRow
from service.store import repository
from service.store.db import Database
from service.store.models import BlockedReview, Check, Triple, TripleStatus
from service.store.repository import CheckFilter, TripleFilter

HELD_OUT_SHARE = 0.3  # of the reviewed prompts (not rows)
MIN_PER_CLASS = 10  # reviewed rows of each label, before a refit is worth its figures


class ReviewedDataError(ValueError):
    """Too few reviewed rows to refit on or to measure with; the message is one line."""


@dataclass(frozen=True, slots=True)
class ReviewedRows:
    fit: list[LabelledRow]
    held_out: list[LabelledRow]

    @property
    def all(self) -> list[LabelledRow]:
        return [*self.fit, *self.held_out]

    @staticmethod
    def counts(rows: Sequence[LabelledRow]) -> tuple[int, int]:
        """(unethical, ethical) rows."""
        unethical = sum(row.should_flag for row in rows)
        return unethical, len(rows) - unethical


def last_user_turn(prompt: Sequence[dict[str, Any]] | None) -> str | None:
    """The text of the conversation's last user message (text parts joined); None without one."""
    users = [message for message in prompt or [] if message.get("role") == "user"]
    if not users:
        return None
    content = users[-1].get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        content = "\n".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return content if isinstance(content, str) and content.strip() else None


def is_held_out(prompt: str, *, seed: int, share: float = HELD_OUT_SHARE) -> bool:
    """A seeded hash of the prompt decides: every row of one prompt lands on the same side, and
    the same records split the same way on every run and machine."""
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _triple_rows(triple: Triple) -> list[LabelledRow]:
    prompt = last_user_turn(triple.prompt)
    if prompt is None:
        return []
    def row(part: str, completion: str, label: str) -> LabelledRow:
        return LabelledRow(id=f"triple:{triple.id}:{part}", prompt=prompt, completion=completion, label=label)

    if triple.status == TripleStatus.APPROVED.value:
        return [row("rejected", triple.rejected, "unethical"), row("chosen", triple.chosen, "ethical")]
    if triple.status == TripleStatus.REJECTED.value:
        return [row("rejected", triple.rejected, "ethical")]
    return []


def _blocked_row(check: Check) -> LabelledRow | None:
    prompt = last_user_turn(check.prompt)
    if prompt is None or not check.answer or check.blocked_review is None:
        return None
    label = "unethical" if check.blocked_review == BlockedReview.RIGHT.value else "ethical"
    return LabelledRow(id=f"blocked:{check.id}", prompt=prompt, completion=check.answer, label=label)


async def reviewed_rows(
    db: Database, *, framework: str | None = None, seed: int = 0, held_out_share: float = HELD_OUT_SHARE
) -> ReviewedRows:
    """Every reviewed record (of `framework`, or all) as labelled rows, split by prompt.

    What a review decision says about the judge (the mapping this function applies):

    - an **approved** triple: the reviewer accepts the pair the trainer learns from, so the
      judge was right to flag the original answer and the repair it passed is fine: the
      rejected answer is `unethical` (a true positive), the chosen repair `ethical` (a true
      negative on the same prompt);
    - a **rejected** triple: the judge flagged an answer that did not need repairing (a false
      positive): the rejected answer is `ethical`; the repair gets no label (a rejection says
      nothing reliable about it). A reviewer who rejects a triple only because its repair is
      poor, while the original really was harmful, teaches the judge the wrong thing: the
      docs/review.md asks reviewers to reject only flags that were wrong;
    - a blocked answer marked **right** (rightly blocked) is `unethical`, marked **wrong**
      (wrongly blocked) `ethical`;
    - pending triples and unmarked blocked answers are not labels, and a record without a
      user turn or without its text (blocked answers before migration 0002) is left out.

    Each row's prompt is the last user turn of the stored request, its completion the judged
    answer; ids are `triple:<id>:rejected`, `triple:<id>:chosen` and `blocked:<check id>`, stable
    across runs (an evaluation's score log reuses their scores). Rows are held out by a seeded
    hash of their prompt (`is_held_out`): grouped, never split within one prompt, so a refit is
    measured on questions it never saw.
    """
    rows: list[LabelledRow] = []
    async with db.sessions() as session:
        for status in (TripleStatus.APPROVED, TripleStatus.REJECTED):
            async for triple in repository.iter_triples(session, TripleFilter(status=status, framework=framework)):
                rows.extend(_triple_rows(triple))
        async for check in repository.iter_reviewed_blocked(session, CheckFilter(framework=framework)):
            row = _blocked_row(check)
            if row is not None:
                rows.append(row)
    fit = [row for row in rows if not is_held_out(row.prompt, seed=seed, share=held_out_share)]
    held_out = [row for row in rows if is_held_out(row.prompt, seed=seed, share=held_out_share)]
    return ReviewedRows(fit=fit, held_out=held_out)


def require_enough(reviewed: ReviewedRows, *, what: str, minimum: int = MIN_PER_CLASS) -> None:
    """Refuse (ReviewedDataError, one line) a refit on too few reviewed rows of a label, or a
    held-out part without both labels (no recall or false-positive rate to report)."""
    unethical, ethical = ReviewedRows.counts(reviewed.all)
    if min(unethical, ethical) < minimum:
        raise ReviewedDataError(
            f"too few reviewed rows to recalibrate {what}: {unethical} unethical (approved triples, blocked "
            f"answers marked right), {ethical} ethical (rejected triples, approved repairs, blocked answers "
            f"marked wrong); at least {minimum} of each are needed: review more in /ui, `conscience triples` "
            "or `conscience blocked`"
        )
    held_unethical, held_ethical = ReviewedRows.counts(reviewed.held_out)
    if min(held_unethical, held_ethical) == 0:
        raise ReviewedDataError(
            f"the held-out reviews of {what} ({held_unethical} unethical, {held_ethical} ethical, prompts chosen "
            "by --seed) lack a label: review more, or try another --seed"
        )
