"""`conscience triples list|show|approve|reject|export` against real databases."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import typer
from typer.testing import CliRunner, Result

from service.commands.triples import triples_app
from service.store.db import Database
from service.store.ingest import insert_records
from service.store.records import TripleRecord
from tests.store.factories import make_triple
from tests.store.test_cli import invoke as invoke_store

cli = typer.Typer()
cli.add_typer(triples_app, name="triples")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def scored(index: int, score: float, framework: str = "three_laws") -> TripleRecord:
    details = {"rejected_verdict": {"label": "unethical", "score": score},
               "chosen_verdict": {"label": "ethical", "score": 0.1},
               "discarded_drafts": [{"text": "a failed draft", "reason": "judge", "score": 0.7}]}
    return make_triple(index, details=details, framework=framework,
                       created_at=T0 + timedelta(hours=index))


async def invoke(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, cli, ["triples", *args])


async def test_review_from_the_terminal(db_url: str, empty_db: Database) -> None:
    assert (await invoke_store("db", "upgrade", "--db-url", db_url)).exit_code == 0
    triples = [scored(0, 0.6), scored(1, 0.8, "wwjd"), scored(2, 0.95), scored(3, 0.99)]
    assert await insert_records(empty_db, triples) == []
    url = ["--db-url", db_url]

    listed = await invoke("list", "--min-score", "0.7", "--max-score", "0.96", *url)
    assert listed.exit_code == 0, listed.output
    assert {t.id for t in triples if t.id in listed.stdout} == {triples[1].id, triples[2].id}
    since = await invoke("list", "--since", "2026-03-01T13:30:00", "--framework", "three_laws", *url)
    assert {t.id for t in triples if t.id in since.stdout} == {triples[2].id, triples[3].id}

    shown = await invoke("show", triples[0].id, *url)
    assert "harmful answer 0" in shown.stdout and "repaired answer 0" in shown.stdout
    assert "a failed draft" in shown.stdout and "score 0.6" in shown.stdout

    assert (await invoke("approve", triples[0].id, *url)).stdout.strip() == "Approved 1 triple."
    matched = await invoke("reject", "--matching", "--min-score", "0.9", *url)
    assert matched.stdout.strip() == "Rejected 2 triples."
    unknown = await invoke("approve", triples[1].id, "nope", *url)
    assert unknown.exit_code == 1 and "'nope'" in unknown.stderr
    assert (await invoke("approve", *url)).exit_code == 2  # neither ids nor --matching

    statuses = (await invoke("list", "--status", "pending", *url)).stdout
    assert triples[1].id in statuses and triples[0].id not in statuses

    exported = await invoke("export", *url)
    assert exported.exit_code == 0, exported.output
    [line] = exported.stdout.splitlines()
    assert orjson.loads(line) == {
        "prompt": triples[0].prompt,
        "chosen": [{"role": "assistant", "content": "repaired answer 0"}],
        "rejected": [{"role": "assistant", "content": "harmful answer 0"}],
    }
    assert (await invoke("show", "nope", *url)).exit_code == 1
