"""One spool file per writer process (`serve --workers N`, replicas on one volume): each claims
its own slot with a flock, and the files of processes that are gone are replayed by a live one."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from service.store.db import Database
from service.store.spool import claim_slot, orphans, unlock
from tests.store.test_writer import KILLED_WRITER, new_writer, stored_ids

ROOT = Path(__file__).resolve().parents[2]


def test_each_claim_gets_its_own_file_and_a_released_slot_is_reused(tmp_path: Path) -> None:
    base = tmp_path / "spool.jsonl"
    first, first_lock = claim_slot(base)
    second, second_lock = claim_slot(base)
    assert (first, second) == (base, tmp_path / "spool.jsonl.1")
    unlock(first_lock)
    again, again_lock = claim_slot(base)
    assert again == base
    unlock(again_lock)
    unlock(second_lock)


def test_orphans_are_the_files_with_records_and_no_live_owner(tmp_path: Path) -> None:
    base = tmp_path / "spool.jsonl"
    own, own_lock = claim_slot(base)
    live, live_lock = claim_slot(base)
    for path in (own, live, tmp_path / "spool.jsonl.2", tmp_path / "spool.jsonl.3.replaying"):
        path.write_text('{"x": 1}\n')
    (tmp_path / "spool.jsonl.4").write_text("")  # nothing in it
    (tmp_path / "spool.jsonl.dead.jsonl").write_text('{"x": 1}\n')  # a dead letter, not a spool
    found = list(orphans(base, own))
    assert [path.name for path, _ in found] == ["spool.jsonl.2", "spool.jsonl.3"]
    for _, descriptor in found:
        unlock(descriptor)
    unlock(own_lock)
    unlock(live_lock)


async def _spooling_writer(db_url: str, spool: Path, count: int) -> tuple[asyncio.subprocess.Process, list[str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_WRITER, db_url, str(spool), str(count),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )
    assert process.stdout is not None
    ids = []
    while (line := (await asyncio.wait_for(process.stdout.readline(), 60)).decode().strip()) != "spooled":
        assert line, "writer process exited early"
        ids.append(line)
    return process, ids


async def test_two_processes_spool_apart_and_a_survivor_replays_both(
    db_url: str, empty_db: Database, tmp_path: Path
) -> None:
    # No tables yet: both writers spool everything, each to its own file.
    spool = tmp_path / "spool.jsonl"
    first, first_ids = await _spooling_writer(db_url, spool, 10)
    second, second_ids = await _spooling_writer(db_url, spool, 10)
    assert spool.exists() and (tmp_path / "spool.jsonl.1").exists()
    first.kill()
    await first.wait()

    await empty_db.create_all()
    survivor = new_writer(empty_db, spool)  # takes the dead writer's slot and replays it
    await survivor.start()
    assert sorted(await stored_ids(empty_db)) == sorted(first_ids)

    second.kill()  # gone while the survivor runs: its retry loop adopts the file
    await second.wait()
    for _ in range(200):
        if len(await stored_ids(empty_db)) == 20:
            break
        await asyncio.sleep(0.05)
    await survivor.aclose()
    assert sorted(await stored_ids(empty_db)) == sorted(first_ids + second_ids)
    assert not any(path.stat().st_size for path in tmp_path.glob("spool.jsonl*") if not path.name.endswith(".lock"))
