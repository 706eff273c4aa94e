"""SIGTERM with a request in flight: `conscience serve` (one worker or several) exits within
`--shutdown-grace-s` plus a margin, however long the request would still take; the request
ends with a 503 in OpenAI's error shape, and its check record, error "shutdown", is in the
database afterwards."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.processes import free_port, wait_until_up

ROOT = Path(__file__).resolve().parents[1]
# No max_tokens: its check would read the upstream's /models first, which the test delays too.
BODY = {"model": "policy", "messages": [{"role": "user", "content": "Write a long essay."}]}
GRACE_S = 2.0
# Start of the shutdown to exit: the writer's drain, the backend and database closing and, with
# workers, the supervisor's join.
MARGIN_S = 8.0
# How long the upstream takes to answer: the old server waited it out before exiting.
UPSTREAM_DELAY_S = 60.0


def _serve(tmp_path: Path, upstream: FakeUpstream, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "CONSCIENCE_UPSTREAM_URL": upstream.url,
        "CONSCIENCE_JUDGE_MODEL": "base-model",
        "CONSCIENCE_MODE": "enforce",
        "CONSCIENCE_LOG_LEVEL": "warning",
        "CONSCIENCE_DB_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        "CONSCIENCE_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
        "CONSCIENCE_SHUTDOWN_GRACE_S": str(GRACE_S),
    }
    proxy = subprocess.Popen(
        [sys.executable, "-m", "conscience_cli", "serve", "--workers", str(workers), "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    return proxy, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_ends_a_long_request_within_the_grace_and_records_it(tmp_path: Path, workers: int) -> None:
    with FakeUpstream() as upstream:
        proxy, origin = _serve(tmp_path, upstream, workers)
        answers: list[httpx.Response | Exception] = []

        def ask() -> None:
            try:
                answers.append(httpx.post(
                    f"{origin}/v1/chat/completions", json=BODY, headers={"x-request-id": "long-request"},
                    timeout=UPSTREAM_DELAY_S * 3,
                ))
            except httpx.HTTPError as exc:
                answers.append(exc)

        client = threading.Thread(target=ask)
        try:
            wait_until_up(f"{origin}/healthz")
            upstream.delay_s = UPSTREAM_DELAY_S  # from here on: a generation that takes a minute
            client.start()
            deadline = time.monotonic() + 30
            while not upstream.calls("generation") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert upstream.calls("generation"), "the request never reached the upstream"
            signalled = time.monotonic()
            proxy.send_signal(signal.SIGTERM)
            try:
                code = proxy.wait(GRACE_S + MARGIN_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"serve still running {GRACE_S + MARGIN_S} s after SIGTERM")
            took = time.monotonic() - signalled
            assert code in (0, -signal.SIGTERM), proxy.stderr.read().decode() if proxy.stderr else ""
            assert took >= GRACE_S - 0.5  # the request had its grace
            client.join(10)
            [answer] = answers
            assert isinstance(answer, httpx.Response), answer
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert error["code"] == "server_shutting_down" and error["type"] == "api_error"
            assert set(error) == {"message", "type", "param", "code"}
        finally:
            if proxy.poll() is None:
                proxy.kill()
                proxy.wait(10)
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        rows = db.execute("select verdict, error, mode from checks where client_request_id = 'long-request'").fetchall()
    assert rows == [("unchecked", "shutdown", "enforce")]
    assert not any(
        path.stat().st_size for path in tmp_path.glob("spool.jsonl*") if not path.name.endswith(".lock")
    )  # written to the database before the exit, not left for the next start
