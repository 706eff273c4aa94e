"""`conscience triples list|show|approve|reject|export`: review DPO triples from a terminal.

The same repository functions as the admin API and the console, so SQLite and PostgreSQL
behave alike. Filters (status, framework, the flagged answer's score range, creation time in
UTC) apply to `list` and `export`, and to `approve`/`reject --matching` (every triple that
matches, instead of ids). `export` writes TRL's conversational preference format, one JSON
object per line, as `GET /admin/triples/export` and the trainer do (service/store/preference.py).
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer

from service.commands.db import DbUrl, _with_database
from service.commands.errors import fail
from service.commands.review_output import echo_conversation, echo_discarded_drafts, last_user_text, one_line
from service.store import repository
from service.store.db import Database
from service.store.models import Triple, TripleStatus, as_utc
from service.store.preference import preference_record
from service.store.repository import TripleFilter

triples_app = typer.Typer(
    help="Review the logged (prompt, rejected, chosen) triples the trainer learns from.",
    no_args_is_help=True,
)

_TIME_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]

Status = Annotated[TripleStatus | None, typer.Option(help="Only triples in this status.")]
Framework = Annotated[str | None, typer.Option(help="Only this framework.")]
MinScore = Annotated[
    float | None, typer.Option(min=0.0, max=1.0, help="Flagged answer's score at least this.")
]
MaxScore = Annotated[
    float | None, typer.Option(min=0.0, max=1.0, help="Flagged answer's score at most this.")
]
Since = Annotated[
    datetime | None, typer.Option(formats=_TIME_FORMATS, help="Created at or after (UTC).")
]
Until = Annotated[datetime | None, typer.Option(formats=_TIME_FORMATS, help="Created before (UTC).")]
Ids = Annotated[list[str] | None, typer.Argument(metavar="[ID]...", help="Triple ids.")]
Matching = Annotated[
    bool, typer.Option("--matching", help="Every triple matching the filters instead of ids.")
]


def _filter(
    status: TripleStatus | None, framework: str | None, min_score: float | None,
    max_score: float | None, since: datetime | None, until: datetime | None,
) -> TripleFilter:
    # typer parses naive datetimes; the store's times are UTC.
    return TripleFilter(
        status=status, framework=framework, since=as_utc(since), until=as_utc(until),
        min_score=min_score, max_score=max_score,
    )


def score_of(triple: Triple) -> float | None:
    """The flagged answer's score (P(unethical)) as the judge gave it."""
    return (triple.details.get("rejected_verdict") or {}).get("score")


@triples_app.command("list")
def list_command(
    status: Status = None, framework: Framework = None, min_score: MinScore = None,
    max_score: MaxScore = None, since: Since = None, until: Until = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    db_url: DbUrl = None,
) -> None:
    """Triples, newest first: id, time, status, framework, score and the prompt's start."""
    where = _filter(status, framework, min_score, max_score, since, until)

    async def load(db: Database) -> tuple[list[Triple], int]:
        async with db.sessions() as session:
            rows = await repository.list_triples(session, where, limit=limit, offset=offset)
            return list(rows), await repository.count_triples(session, where)

    rows, total = _with_database(db_url, load)
    if not rows:
        typer.echo("No triples.")
        return
    typer.echo(f"{'ID':32}  {'CREATED (UTC)':16}  {'STATUS':8}  {'FRAMEWORK':12}  SCORE  PROMPT")
    for triple in rows:
        score = score_of(triple)
        typer.echo(
            f"{triple.id:32}  {triple.created_at:%Y-%m-%d %H:%M}  {triple.status:8}  "
            f"{triple.framework[:12]:12}  {'-' if score is None else f'{score:.3f}':5}  "
            f"{one_line(last_user_text(triple.prompt), 60)}"
        )
    typer.secho(f"{len(rows)} of {total} (offset {offset}).", err=True)


@triples_app.command("show")
def show_command(
    triple_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: Annotated[bool, typer.Option("--json", help="The admin API's JSON instead.")] = False,
    db_url: DbUrl = None,
) -> None:
    """One triple in full: the conversation, both answers, their scores, the discarded drafts."""
    from service.api.admin.protocol import TripleOut

    async def load(db: Database) -> Triple | None:
        async with db.sessions() as session:
            return await repository.get_triple(session, triple_id)

    triple = _with_database(db_url, load)
    if triple is None:
        fail(f"no triple with id {triple_id!r}", code=1)
    if as_json:
        typer.echo(TripleOut.model_validate(triple).model_dump_json(indent=2))
        return
    chosen_score = (triple.details.get("chosen_verdict") or {}).get("score")
    typer.echo(f"{triple.id}  {triple.status}  {triple.framework}  {triple.created_at:%Y-%m-%d %H:%M:%S} UTC")
    echo_conversation(triple.prompt)
    typer.echo(f"\n--- rejected (score {score_of(triple)}) ---\n{triple.rejected}")
    typer.echo(f"\n--- chosen (score {chosen_score}) ---\n{triple.chosen}")
    echo_discarded_drafts(triple.details.get("discarded_drafts"))


def _review(
    status: TripleStatus, ids: list[str] | None, matching: bool, where: TripleFilter,
    db_url: str | None,
) -> None:
    if bool(ids) == matching:
        fail("give triple ids, or --matching with filters (not both)")

    async def review(db: Database) -> int:
        async with db.sessions.begin() as session:
            chosen = ids or [t.id async for t in repository.iter_triples(session, where)]
            if chosen:
                await repository.set_triple_status(session, chosen, status)
            return len(chosen)

    try:
        count = _with_database(db_url, review)
    except repository.UnknownTriples as exc:
        fail(f"no triple with id {', '.join(repr(i) for i in exc.ids)}: nothing changed", code=1)
    typer.echo(f"{status.value.capitalize()} {count} triple{'s' if count != 1 else ''}.")


def _review_command(verb: str, status: TripleStatus) -> None:
    """`approve` and `reject`: one definition, two commands."""

    @triples_app.command(verb)
    def command(
        ids: Ids = None, matching: Matching = False,
        framework: Framework = None, min_score: MinScore = None, max_score: MaxScore = None,
        since: Since = None, until: Until = None,
        only: Annotated[
            TripleStatus, typer.Option("--status", help="With --matching: triples in this status.")
        ] = TripleStatus.PENDING,
        db_url: DbUrl = None,
    ) -> None:
        where = _filter(only, framework, min_score, max_score, since, until)
        _review(status, ids, matching, where, db_url)

    command.__doc__ = f"Mark triples {status.value} (all or none: an unknown id changes nothing)."


_review_command("approve", TripleStatus.APPROVED)
_review_command("reject", TripleStatus.REJECTED)


@triples_app.command("export")
def export_command(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    status: Annotated[
        TripleStatus, typer.Option(help="Triples in this status.")
    ] = TripleStatus.APPROVED,
    framework: Framework = None, min_score: MinScore = None, max_score: MaxScore = None,
    since: Since = None, until: Until = None,
    db_url: DbUrl = None,
) -> None:
    """JSONL in TRL's conversational preference format (prompt, chosen, rejected), oldest first."""
    where = _filter(status, framework, min_score, max_score, since, until)

    async def export(db: Database) -> int:
        count = 0
        with output.open("wb") if output else nullcontext(sys.stdout.buffer) as sink:
            async with db.sessions() as session:
                async for triple in repository.iter_triples(session, where):
                    sink.write(orjson.dumps(preference_record(triple.prompt, triple.chosen, triple.rejected)) + b"\n")
                    count += 1
        return count

    count = _with_database(db_url, export)
    typer.secho(f"Exported {count} triple{'s' if count != 1 else ''}.", err=True)
