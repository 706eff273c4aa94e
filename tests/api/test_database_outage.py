"""Invariant 2 end to end: with PostgreSQL cut off, clients are answered at once and every
record reaches the database once it is back, exactly once."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from service.store.db import Database
from service.store.models import Check, Triple
from tests.api.conftest import HARMFUL, REPAIRED, ProxyFactory
from tests.fakes.upstream import FakeUpstream
from tests.store.databases import (
    PG_URL,
    _require_postgres,
    drop_postgres_schema,
    new_postgres_schema,
    postgres_schema_url,
)
from tests.store.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres
ASK = [{"role": "user", "content": "My neighbour is loud."}]


async def _counts(url: str) -> tuple[int, int]:
    db = Database(url)
    try:
        async with db.sessions() as session:
            checks = await session.scalar(select(func.count()).select_from(Check))
            triples = await session.scalar(select(func.count()).select_from(Triple))
        return checks, triples
    finally:
        await db.dispose()


async def test_outage_costs_clients_nothing_and_loses_nothing(
    start_proxy: ProxyFactory, fake: FakeUpstream
) -> None:
    await _require_postgres()
    schema = await new_postgres_schema()
    pg = make_url(PG_URL)
    network = TcpProxy(pg.host or "127.0.0.1", pg.port or 5432)
    await network.start()
    try:
        through_network = postgres_schema_url(schema).replace(f":{pg.port or 5432}/", f":{network.port}/")
        proxy = await asyncio.to_thread(
            start_proxy, db_url=through_network, writer_retry_interval_s=0.2, api_key_refresh_s=3600
        )
        client = proxy.client()
        fake.policy_answer = HARMFUL

        def ask() -> float:
            started = time.perf_counter()
            completion = client.chat.completions.create(model="policy", messages=ASK)
            assert completion.choices[0].message.content == REPAIRED
            return time.perf_counter() - started

        await asyncio.to_thread(ask)  # the database is up
        await network.stop()
        durations = [await asyncio.to_thread(ask) for _ in range(5)]
        assert max(durations) < 2.0, durations  # nobody waited for the dead database
        deadline = time.monotonic() + 15
        while (await asyncio.to_thread(proxy.metric, "conscience_spool_depth")) == 0:
            assert time.monotonic() < deadline, "nothing was spooled during the outage"
            await asyncio.sleep(0.1)

        await network.start()
        direct = postgres_schema_url(schema)
        deadline = time.monotonic() + 20
        while (counts := await _counts(direct)) != (6, 6):
            assert time.monotonic() < deadline, f"records missing after recovery: {counts}"
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        assert await _counts(direct) == (6, 6)  # and no duplicates arrive later
    finally:
        await network.stop()
        await drop_postgres_schema(schema)
