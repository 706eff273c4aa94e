"""A real network outage between the writer and PostgreSQL: every record survives it once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from service.store.db import Database
from service.store.writer import RecordWriter
from tests.store.tcp_proxy import TcpProxy
from tests.store.test_writer import has_stored, mixed_records, stored_ids, wait_until

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("db_url", ["postgres"], indirect=True),
]


@pytest.fixture
async def proxy(db_url: str) -> AsyncIterator[TcpProxy]:
    target = make_url(db_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    await proxy.start()
    yield proxy


async def test_records_survive_a_network_outage(
    db: Database, db_url: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    through_proxy = Database(
        make_url(db_url).set(port=proxy.port).render_as_string(hide_password=False),
        connect_timeout_s=2.0,
    )
    writer = RecordWriter(
        through_proxy, tmp_path / "spool.jsonl",
        batch_size=8, flush_interval_s=0.02, retry_interval_s=0.05, queue_size=1000,
        max_hold_s=5.0, shutdown_timeout_s=10.0,
    )
    await writer.start()
    try:
        before = mixed_records(10)
        for record in before:
            writer.submit(record)
        await wait_until(lambda: has_stored(db, before))

        await proxy.stop()
        during = mixed_records(20, start=10)
        for record in during:
            writer.submit(record)
        await wait_until(lambda: writer.spool_depth == len(during))

        await proxy.start()
        await wait_until(lambda: writer.spool_depth == 0)
    finally:
        await writer.aclose()
        await through_proxy.dispose()
    assert sorted(await stored_ids(db)) == sorted(record.id for record in before + during)
