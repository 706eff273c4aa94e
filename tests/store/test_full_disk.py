"""A disk that fills up under the spool: every record is kept or counted and reported as lost,
and the spool's depth stays what is really on disk.

The disk is a file-size limit (RLIMIT_FSIZE, in a child process): past it a write stops short
and the next one fails, as on a full disk, without root or a mount.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from pathlib import Path

from service.store.db import Database
from tests.store.test_writer import new_writer, stored_ids

DISK_BYTES = 12_000  # room for a few dozen records

FULL_DISK_WRITER = textwrap.dedent(
    f"""
    import asyncio, json, resource, sys
    from pathlib import Path
    from service.store.db import Database
    from service.store.writer import RecordWriter
    from tests.store.test_writer import mixed_records

    async def main(url, spool):
        # The tables do not exist: the database is down and every batch goes to the spool.
        writer = RecordWriter(Database(url), Path(spool), batch_size=4, flush_interval_s=0.01,
                              retry_interval_s=60, queue_size=1000, max_hold_s=5,
                              shutdown_timeout_s=5)
        await writer.start()
        resource.setrlimit(resource.RLIMIT_FSIZE, ({DISK_BYTES}, resource.RLIM_INFINITY))
        records = mixed_records(100)
        for record in records:
            writer.submit(record)
        await writer.aclose()
        print(json.dumps({{"ids": [record.id for record in records],
                           "spool_depth": writer.spool_depth, "lost": writer.lost}}))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_full_disk_counts_and_reports_every_record_it_cannot_keep(
    db_url: str, empty_db: Database, tmp_path: Path
) -> None:
    spool_path = tmp_path / "spool.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FULL_DISK_WRITER, db_url, str(spool_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()[-2000:]
    report = json.loads(stdout)

    # Every line on disk is a whole record (no torn line), and the depth counted them all.
    spooled = [json.loads(line)["id"] for line in spool_path.read_bytes().splitlines()]
    assert report["spool_depth"] == len(spooled) > 0
    assert report["lost"] == len(report["ids"]) - len(spooled) > 0
    assert set(spooled) <= set(report["ids"])
    assert stderr.decode().count("they are lost") >= 1

    await empty_db.create_all()
    successor = new_writer(empty_db, spool_path)
    await successor.start()
    await successor.aclose()
    assert sorted(await stored_ids(empty_db)) == sorted(spooled)
