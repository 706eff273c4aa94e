"""`conscience blocked list|show|mark` against real databases."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import typer
from typer.testing import CliRunner, Result

from service.commands.blocked import blocked_app
from service.store import repository
from service.store.db import Database
from service.store.ingest import insert_records
from service.store.records import CheckRecord
from service.store.repository import CheckFilter
from tests.store.factories import make_check
from tests.store.test_cli import invoke as invoke_store

cli = typer.Typer()
cli.add_typer(blocked_app, name="blocked")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def blocked(index: int, **overrides: object) -> CheckRecord:
    values: dict[str, object] = {
        "verdict": "unethical", "score": 0.9, "attempts": 2, "created_at": T0 + timedelta(hours=index),
        "prompt": [{"role": "user", "content": f"blocked question {index}"}],
        "answer": f"blocked answer {index}", "drafts": [{"text": "a failed draft", "reason": "judge", "score": 0.7}],
    }
    return make_check(index, **{**values, **overrides})


async def invoke(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, cli, ["blocked", *args])


async def marks(db: Database) -> dict[str, str | None]:
    async with db.sessions() as session:
        rows = await repository.list_blocked(session, CheckFilter(), limit=100)
    return {row.id: row.blocked_review for row in rows}


async def test_mark_blocked_answers_from_the_terminal(db_url: str, empty_db: Database) -> None:
    assert (await invoke_store("db", "upgrade", "--db-url", db_url)).exit_code == 0
    answers = [blocked(0), blocked(1, framework="wwjd"), blocked(2)]
    passed = make_check(3, verdict="ethical")
    assert await insert_records(empty_db, [*answers, passed]) == []
    url = ["--db-url", db_url]

    listed = await invoke("list", *url)
    assert listed.exit_code == 0, listed.output
    assert [a.id for a in answers if a.id in listed.stdout] == [a.id for a in answers]
    assert passed.id not in listed.stdout and "blocked question 1" in listed.stdout
    shown = await invoke("show", answers[0].id, *url)
    assert "blocked answer 0" in shown.stdout and "a failed draft" in shown.stdout and "unreviewed" in shown.stdout

    assert (await invoke("mark", answers[0].id, answers[2].id, "--right", *url)).stdout.strip() == (
        "Marked 2 blocked answers rightly blocked.")
    assert (await invoke("mark", answers[2].id, "--wrong", *url)).stdout.strip() == (
        "Marked 1 blocked answer wrongly blocked.")  # a second mark replaces the first
    assert await marks(empty_db) == {answers[0].id: "right", answers[1].id: None, answers[2].id: "wrong"}
    async with empty_db.sessions() as session:
        marked = await repository.get_blocked(session, answers[0].id)
    assert marked is not None and marked.reviewed_at is not None

    # Unreviewed by default; --review chooses.
    unreviewed = (await invoke("list", *url)).stdout
    assert answers[1].id in unreviewed and answers[0].id not in unreviewed
    right = (await invoke("list", "--review", "right", *url)).stdout
    assert answers[0].id in right and answers[2].id not in right
    assert "No blocked answers." in (await invoke("list", "--review", "wrong", "--framework", "wwjd", *url)).stdout

    # All or none: a passed check is not a blocked answer, and nothing changes.
    refused = await invoke("mark", answers[1].id, passed.id, "--right", *url)
    assert refused.exit_code == 1 and repr(passed.id) in refused.stderr and "nothing changed" in refused.stderr
    assert await marks(empty_db) == {answers[0].id: "right", answers[1].id: None, answers[2].id: "wrong"}
    assert (await invoke("mark", answers[1].id, *url)).exit_code == 2  # --right or --wrong is required
    assert (await invoke("show", passed.id, *url)).exit_code == 1
