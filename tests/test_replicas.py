"""Two proxy replicas (`conscience serve` subprocesses) on one PostgreSQL: every record lands
exactly once, also through a database outage both saw (each replays its own spool file); an
adapter activated through one is followed by the other; a revoked key stops working on both,
and so does a console session logged out through either;
two trainers started together: one holds the advisory lock, the other is refused."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from service.store import credentials
from service.store.db import Database
from service.store.migrate import upgrade
from service.store.models import AdapterVersion, Check
from tests.fakes.upstream import FakeUpstream
from tests.processes import ConsoleSession, free_port, wait_until_up_async
from tests.store.databases import (
    _require_postgres,
    drop_postgres_schema,
    new_postgres_schema,
    postgres_schema_url,
)
from tests.store.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "an-admin-key-long-enough"
# A served name: once an adapter is active the proxy names the policy, and an unserved name is a 404.
BODY = {"model": "base-model", "messages": [{"role": "user", "content": "Hello?"}], "max_tokens": 8}


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    await _require_postgres()
    schema = await new_postgres_schema()
    url = postgres_schema_url(schema)
    await asyncio.to_thread(upgrade, url)
    try:
        yield url
    finally:
        await drop_postgres_schema(schema)




class Replica:
    def __init__(self, db_url: str, upstream: str, spool: Path) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "CONSCIENCE_UPSTREAM_URL": upstream,
            "CONSCIENCE_JUDGE_MODEL": "base-model",
            "CONSCIENCE_MODE": "monitor",
            "CONSCIENCE_LOG_LEVEL": "warning",
            "CONSCIENCE_ADMIN_KEY": ADMIN_KEY,
            "CONSCIENCE_DB_URL": db_url,
            "CONSCIENCE_AUTO_MIGRATE": "false",
            "CONSCIENCE_SPOOL_PATH": str(spool),
            "CONSCIENCE_WRITER_RETRY_INTERVAL_S": "0.2",
            "CONSCIENCE_WRITER_FLUSH_INTERVAL_S": "0.05",
            "CONSCIENCE_WRITER_MAX_HOLD_S": "2",
            "CONSCIENCE_DB_CONNECT_TIMEOUT_S": "1",
            "CONSCIENCE_API_KEY_REFRESH_S": "0.2",
            "CONSCIENCE_ADAPTER_POLL_S": "0.2",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "conscience_cli", "serve", "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return -9


async def _ask(replica: Replica, key: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=f"{replica.url}/v1", timeout=20) as client:
        return await client.post("/chat/completions", json=BODY, headers=headers)


async def _count_checks(db: Database) -> int:
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(Check))


async def _eventually(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_two_replicas_on_one_database(pg_url: str, up: FakeUpstream, tmp_path: Path) -> None:
    url = make_url(pg_url)
    network = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await network.start()
    replica_url = url.set(port=network.port).render_as_string(hide_password=False)
    db = Database(pg_url)
    # One spool volume for both: each replica claims its own file in it.
    replicas = [Replica(replica_url, up.url, tmp_path / "spool.jsonl") for _ in range(2)]
    try:
        for replica in replicas:
            await wait_until_up_async(f"{replica.url}/healthz")

        # Records: some before, some during an outage both replicas see, all land once.
        ids = []
        for index in range(10):
            response = await _ask(replicas[index % 2])
            assert response.status_code == 200
            ids.append(response.json()["id"])
        assert await _eventually(lambda: _has(db, 10))
        await network.stop()
        for index in range(10):
            response = await _ask(replicas[index % 2])
            assert response.status_code == 200
            ids.append(response.json()["id"])
        spooled = lambda: asyncio.sleep(0, result=_spooled_files(tmp_path) == 2)  # noqa: E731
        assert await _eventually(spooled), (
            "both replicas spool while the database is away: "
            f"{[(p.name, p.stat().st_size) for p in tmp_path.glob('spool*')]}"
        )
        await network.start()
        assert await _eventually(lambda: _has(db, 20)), "the spools are replayed"
        await asyncio.sleep(1.0)  # more retries: nothing is written twice
        async with db.sessions() as session:
            stored = list(await session.scalars(select(Check.request_id)))
        assert len(stored) == 20 and len(set(ids)) == 20

        # An adapter activated through one replica is followed by the other.
        adapter = tmp_path / "adapters" / "conscience-v1"
        adapter.mkdir(parents=True)
        (adapter / "adapter_config.json").write_text("{}")
        async with db.sessions.begin() as session:
            session.add(AdapterVersion(name="conscience-v1", base_model="base-model",
                                       path=str(adapter), status="candidate"))
        async with httpx.AsyncClient(base_url=replicas[0].url, timeout=20) as client:
            activated = await client.post(
                "/admin/adapters/conscience-v1/activate",
                headers={"authorization": f"Bearer {ADMIN_KEY}"},
            )
        assert activated.status_code == 200, activated.text

        async def follows() -> bool:
            await _ask(replicas[1])
            return up.calls("generation")[-1].body["model"] == "conscience-v1"

        assert await _eventually(follows, timeout_s=5.0), "the other replica follows within its poll"

        # A key works on both; revoked, it stops working on both.
        async with db.sessions.begin() as session:
            key, plaintext = await credentials.create_api_key(session, "team-a")
        for replica in replicas:
            assert await _eventually(lambda r=replica: _status_is(r, plaintext, 200), timeout_s=5.0)
        async with db.sessions.begin() as session:
            await credentials.revoke_api_key(session, key.id)
        for replica in replicas:
            assert await _eventually(lambda r=replica: _status_is(r, plaintext, 401), timeout_s=5.0)

        # A console session logged out through one replica is refused by both, at once.
        await asyncio.to_thread(_console_logout_ends_the_session_everywhere, [r.url for r in replicas])
    finally:
        # The replicas drain through the network of this event loop: wait for them off it.
        codes = await asyncio.gather(*(asyncio.to_thread(replica.stop) for replica in replicas))
        if network._server is not None:
            await network.stop()
        await db.dispose()
    # uvicorn re-raises SIGTERM once its graceful shutdown (the writer's drain) is done.
    assert all(code in (0, -signal.SIGTERM) for code in codes), codes


def _console_logout_ends_the_session_everywhere(origins: list[str]) -> None:
    console = ConsoleSession(origins[0])
    console.log_in(ADMIN_KEY)
    assert console.on(origins[1]).page().status_code == 200
    console.on(origins[1]).log_out()
    for origin in origins:
        assert console.on(origin).page().status_code == 303


async def _has(db: Database, count: int) -> bool:
    try:
        return await _count_checks(db) == count
    except Exception:
        return False


async def _status_is(replica: Replica, key: str, status: int) -> bool:
    return (await _ask(replica, key)).status_code == status


def _spooled_files(directory: Path) -> int:
    """How many spool files (each with its claimed `.replaying` part) hold records."""
    return len({
        path.name.removesuffix(".replaying") for path in directory.glob("spool.jsonl*")
        if not path.name.endswith((".lock", ".dead.jsonl")) and path.stat().st_size > 0
    })


TRAINER = textwrap.dedent(
    """
    import asyncio, sys
    from service.store.db import Database
    from trainer.common.lock import TrainingLockHeld, training_lock

    async def main(url):
        db = Database(url)
        try:
            async with training_lock(db):
                print("trained", flush=True)
                await asyncio.sleep(3)
        except TrainingLockHeld:
            print("refused", flush=True)
        finally:
            await db.dispose()

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_two_trainers_started_together_train_once(pg_url: str) -> None:
    trainers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", TRAINER, pg_url, stdout=asyncio.subprocess.PIPE, cwd=ROOT
        )
        for _ in range(2)
    ]
    outputs = [(await trainer.communicate())[0].decode().split() for trainer in trainers]
    assert sorted(outputs) == [["refused"], ["trained"]]


async def test_replicas_migrating_at_once_both_start() -> None:
    # Two replicas with --auto-migrate started together: one migrates, the other waits on the
    # migration lock and finds the schema at head.
    await _require_postgres()
    schema = await new_postgres_schema()
    url = postgres_schema_url(schema)
    try:
        code = "import sys; from service.store.migrate import upgrade; upgrade(sys.argv[1])"
        migrations = [
            await asyncio.create_subprocess_exec(sys.executable, "-c", code, url, cwd=ROOT)
            for _ in range(3)
        ]
        codes = [await asyncio.wait_for(process.wait(), 60) for process in migrations]
        assert codes == [0, 0, 0]
        db = Database(url)
        try:
            assert await _count_checks(db) == 0
        finally:
            await db.dispose()
    finally:
        await drop_postgres_schema(schema)
