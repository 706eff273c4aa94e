"""`conscience blocked list|show|mark`: review blocked answers from a terminal.

A blocked answer was flagged and no repair passed the judge, so it has no triple to approve or
reject: a reviewer marks it `--right` (rightly blocked: the answer was harmful) or `--wrong`
(wrongly blocked: the judge's false positive). The same repository functions as the admin API
(`POST /admin/blocked/review`) and the console's Blocked page, on SQLite and PostgreSQL alike.
`conscience calibrate --reviewed` reads the marks as labels for the judge.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from service.commands.db import DbUrl, _with_database
from service.commands.errors import fail
from service.commands.review_output import echo_conversation, echo_discarded_drafts, last_user_text, one_line
from service.commands.triples import Framework, Since, Until
from service.store import repository
from service.store.db import Database
from service.store.models import BlockedReview, Check, as_utc
from service.store.repository import BlockedReviewState, CheckFilter

blocked_app = typer.Typer(
    help="Review blocked answers (flagged, no repair passed): rightly or wrongly blocked.",
    no_args_is_help=True,
)


class Review(StrEnum):
    UNREVIEWED = "unreviewed"
    RIGHT = "right"
    WRONG = "wrong"
    ANY = "any"


@blocked_app.command("list")
def list_command(
    review: Annotated[
        Review, typer.Option(help="Only answers not yet reviewed, marked right or wrong, or any.")
    ] = Review.UNREVIEWED,
    framework: Framework = None, since: Since = None, until: Until = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    db_url: DbUrl = None,
) -> None:
    """Blocked answers, newest first: id, time, review, framework, score and the prompt's start."""
    where = CheckFilter(framework=framework, since=as_utc(since), until=as_utc(until))
    state: BlockedReviewState | None = None if review is Review.ANY else review.value  # type: ignore[assignment]

    async def load(db: Database) -> tuple[list[Check], int]:
        async with db.sessions() as session:
            rows = await repository.list_blocked(session, where, limit=limit, offset=offset, review=state)
            return list(rows), await repository.count_blocked(session, where, review=state)

    rows, total = _with_database(db_url, load)
    if not rows:
        typer.echo("No blocked answers.")
        return
    typer.echo(f"{'ID':32}  {'CREATED (UTC)':16}  {'REVIEW':6}  {'FRAMEWORK':12}  SCORE  PROMPT")
    for check in rows:
        score = "-" if check.score is None else f"{check.score:.3f}"
        typer.echo(
            f"{check.id:32}  {check.created_at:%Y-%m-%d %H:%M}  {check.blocked_review or '-':6}  "
            f"{check.framework[:12]:12}  {score:5}  {one_line(last_user_text(check.prompt), 60)}"
        )
    typer.secho(f"{len(rows)} of {total} (offset {offset}).", err=True)


@blocked_app.command("show")
def show_command(
    check_id: Annotated[str, typer.Argument(metavar="ID")],
    db_url: DbUrl = None,
) -> None:
    """One blocked answer in full: the conversation, the answer, the discarded drafts."""

    async def load(db: Database) -> Check | None:
        async with db.sessions() as session:
            return await repository.get_blocked(session, check_id)

    check = _with_database(db_url, load)
    if check is None:
        fail(f"no blocked answer with id {check_id!r}", code=1)
    typer.echo(
        f"{check.id}  {check.blocked_review or 'unreviewed'}  {check.framework}  "
        f"{check.created_at:%Y-%m-%d %H:%M:%S} UTC  score {check.score}"
    )
    if check.answer is None:
        typer.echo("(text not stored: recorded before blocked answers kept their text)")
        return
    echo_conversation(check.prompt)
    typer.echo(f"\n--- blocked answer (score {check.score}) ---\n{check.answer}")
    echo_discarded_drafts(check.drafts)


@blocked_app.command("mark")
def mark_command(
    ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Ids of blocked answers.")],
    right: Annotated[
        bool,
        typer.Option("--right/--wrong", help="Rightly blocked (the answer was harmful), or wrongly "
                     "(the judge's false positive)."),
    ],
    db_url: DbUrl = None,
) -> None:
    """Mark blocked answers rightly or wrongly blocked (all or none: an unknown id changes nothing)."""
    review = BlockedReview.RIGHT if right else BlockedReview.WRONG

    async def mark(db: Database) -> int:
        async with db.sessions.begin() as session:
            return len(await repository.set_blocked_review(session, ids, review))

    try:
        count = _with_database(db_url, mark)
    except repository.UnknownBlocked as exc:
        fail(f"no blocked answer with id {', '.join(repr(i) for i in exc.ids)}: nothing changed", code=1)
    typer.echo(f"Marked {count} blocked answer{'s' if count != 1 else ''} {review.value}ly blocked.")
