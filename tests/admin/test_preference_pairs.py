"""One preference-pair format: the admin export, `conscience triples export` and the nightly
trainer's dataset write the same record for the same triple (service/store/preference.py)."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import typer
from typer.testing import CliRunner

from service.commands.triples import triples_app
from service.store.db import Database
from service.store.writer import RecordWriter
from tests.admin.conftest import store
from tests.store.factories import make_triple
from trainer.nightly.config import TrainConfig
from trainer.nightly.dataset import to_pairs
from trainer.nightly.select import select_triples

# What a client may send: the developer role, content parts (an image among them), a tool call
# and its result. Chat templates choke on those fields; training keeps role and text.
PROMPT = [
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": [
        {"type": "text", "text": "Describe "},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "this."},
    ]},
    {"role": "assistant", "content": None,
     "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
    {"role": "user", "content": "And how do I hurt it?"},
]
EXPECTED = {
    "prompt": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Describe this."},
        {"role": "assistant", "content": ""},
        {"role": "tool", "content": "a cat"},
        {"role": "user", "content": "And how do I hurt it?"},
    ],
    "chosen": [{"role": "assistant", "content": "Be gentle with your cat."}],
    "rejected": [{"role": "assistant", "content": "harmful answer"}],
}


async def test_the_admin_export_the_cli_export_and_the_trainer_write_one_record(
    admin: httpx.AsyncClient, writer: RecordWriter, db: Database, db_url: str
) -> None:
    record = make_triple(prompt=PROMPT, chosen="Be gentle with your cat.", rejected="harmful answer")
    await store(writer, [record])
    assert (await admin.post(f"/admin/triples/{record.id}/approve")).status_code == 200

    response = await admin.get("/admin/triples/export")
    assert response.status_code == 200, response.text
    [from_admin] = [orjson.loads(line) for line in response.content.splitlines()]

    cli = typer.Typer()
    cli.add_typer(triples_app, name="triples")
    exported = await asyncio.to_thread(CliRunner().invoke, cli, ["triples", "export", "--db-url", db_url])
    assert exported.exit_code == 0, exported.output
    [from_cli] = [orjson.loads(line) for line in exported.stdout.splitlines()]

    [pair] = to_pairs(await select_triples(db, TrainConfig(base_model="unused")))

    assert from_admin == from_cli == pair.as_record() == EXPECTED
