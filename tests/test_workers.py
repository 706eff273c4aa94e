"""`conscience serve --workers 2`: two worker processes, each with its own spool slot, every
record in the database once, console sessions valid on any worker (and a logout on one ends
the session on every other), a clean drain on SIGTERM."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx

from service.api.ui.session import SessionStore
from service.settings import Settings
from service.workers import export_settings, worker_settings
from tests.processes import ConsoleSession, free_port, start_fake_upstream, wait_until_up

ROOT = Path(__file__).resolve().parents[1]
BODY = {"model": "policy", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}
ADMIN_KEY = "an-admin-key-long-enough"


def test_worker_settings_are_the_parents_less_its_secrets(monkeypatch) -> None:
    monkeypatch.setenv("CONSCIENCE_ADMIN_KEY", ADMIN_KEY)
    parent = Settings(workers=3, port=9123, mode="monitor")
    export_settings(parent)
    assert ADMIN_KEY not in os.environ["CONSCIENCE_SERVE_WORKER_SETTINGS"]
    child = worker_settings()
    migrated = {"store": {"auto_migrate"}}
    assert child.model_dump(exclude=migrated) == parent.model_dump(exclude=migrated)
    assert child.store.auto_migrate is False  # the parent migrated once


def test_a_session_token_from_one_worker_is_valid_on_another_and_nowhere_else() -> None:
    token, session = SessionStore(ADMIN_KEY).create()
    other_worker = SessionStore(ADMIN_KEY).get(token)
    assert other_worker is not None and other_worker.csrf == session.csrf
    assert SessionStore(ADMIN_KEY + "-changed").get(token) is None
    body, mac = token.split(".")
    assert SessionStore(ADMIN_KEY).get(f"{body}x.{mac}") is None
    assert SessionStore(ADMIN_KEY, ttl_s=-1).get(SessionStore(ADMIN_KEY, ttl_s=-1).create()[0]) is None


def test_two_workers_serve_record_and_drain(tmp_path: Path) -> None:
    upstream_port, port = free_port(), free_port()
    upstream = start_fake_upstream(upstream_port)
    env = {
        **os.environ,
        "CONSCIENCE_UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "CONSCIENCE_JUDGE_MODEL": "base-model",
        "CONSCIENCE_MODE": "monitor",
        "CONSCIENCE_LOG_LEVEL": "warning",
        "CONSCIENCE_ADMIN_KEY": ADMIN_KEY,
        "CONSCIENCE_DB_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "CONSCIENCE_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
        # Records wait in the queue until the drain at shutdown must write them.
        "CONSCIENCE_WRITER_FLUSH_INTERVAL_S": "30",
        "CONSCIENCE_WRITER_BATCH_SIZE": "100000",
    }
    proxy = subprocess.Popen(
        [sys.executable, "-m", "conscience_cli", "serve", "--workers", "2", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{upstream_port}/v1/models")
        wait_until_up(f"http://127.0.0.1:{port}/healthz")
        ids = set()
        for _ in range(40):  # new connections: the kernel spreads them over both workers
            with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=10) as client:
                response = client.post("/chat/completions", json=BODY)
                assert response.status_code == 200
                ids.add(response.json()["id"])
        locks = sorted(path.name for path in tmp_path.glob("spool.jsonl*.lock"))
        assert locks == ["spool.jsonl.1.lock", "spool.jsonl.lock"]
        proxy.send_signal(signal.SIGTERM)
        assert proxy.wait(30) == 0, proxy.stderr.read().decode() if proxy.stderr else ""
    finally:
        if proxy.poll() is None:
            proxy.kill()
        upstream.terminate()
        upstream.wait(10)
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        checks = db.execute("select count(*) from checks").fetchone()[0]
    assert checks == 40  # both workers drained their queues into the database
    assert not any(
        path.stat().st_size for path in tmp_path.glob("spool.jsonl*") if not path.name.endswith(".lock")
    )


def test_a_console_logout_on_one_process_ends_the_session_on_the_other(tmp_path: Path) -> None:
    """Two server processes on one SQLite database, as two workers (or replicas) are: a
    session logged out on either is refused by both, and a fresh one still works on both."""
    upstream_port = free_port()
    upstream = start_fake_upstream(upstream_port)
    env = {
        **os.environ,
        "CONSCIENCE_UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "CONSCIENCE_JUDGE_MODEL": "base-model",
        "CONSCIENCE_LOG_LEVEL": "warning",
        "CONSCIENCE_ADMIN_KEY": ADMIN_KEY,
        "CONSCIENCE_DB_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
    }
    servers: list[subprocess.Popen[bytes]] = []
    origins = []
    try:
        wait_until_up(f"http://127.0.0.1:{upstream_port}/v1/models")
        for n in range(2):  # one after the other: the first migrates the file
            port = free_port()
            servers.append(subprocess.Popen(
                [sys.executable, "-m", "conscience_cli", "serve", "--port", str(port)],
                cwd=ROOT, env={**env, "CONSCIENCE_SPOOL_PATH": str(tmp_path / f"spool{n}.jsonl")},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
            origins.append(f"http://127.0.0.1:{port}")
            wait_until_up(f"{origins[-1]}/healthz")
        for out, other in (origins, origins[::-1]):
            console = ConsoleSession(out)
            console.log_in(ADMIN_KEY)
            assert console.on(other).page().status_code == 200  # valid on the other process
            kept = ConsoleSession(other)
            kept.log_in(ADMIN_KEY)
            console.on(other).log_out()  # logged out on the other process ...
            for origin in origins:  # ... the copied cookie is refused by both
                assert console.on(origin).page().status_code == 303
                assert kept.on(origin).page().status_code == 200  # another session is not ended
    finally:
        for server in servers:
            server.terminate()
            server.wait(30)
        upstream.terminate()
        upstream.wait(10)
