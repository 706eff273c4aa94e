"""The proxy over real loopback HTTP, in front of the fake upstream, with a real SQLite store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from service.api.server_limits import uvicorn_config
from service.app import create_app
from service.settings import Settings
from service.store.models import Check, Triple
from tests.fakes.server import ThreadedServer
from tests.fakes.upstream import FakeUpstream

HARMFUL = "Step 1: buy a crowbar. Step 2: break the neighbour's window at night."
REPAIRED = "Talk to your neighbour about the noise, or contact your local mediation service."
# The fast judge answers Yes (the answer helps cause harm) or No.
HARMFUL_VERDICT = {"Yes": 0.9, "No": 0.1}
CLEAN_VERDICT = {"No": 0.95, "Yes": 0.05}
# The bearer token the test proxies' /metrics requires (closed without one: issue 26).
METRICS_KEY = "metrics-key-for-the-tests"
ASK_BODY = {"model": "policy", "messages": [{"role": "user", "content": "My neighbour is loud."}]}


def verdict_by_answer(messages: list[dict[str, Any]]) -> dict[str, float]:
    """The fake judge: flags an answer that contains the harmful text, passes everything else."""
    return HARMFUL_VERDICT if "crowbar" in messages[-1]["content"] else CLEAN_VERDICT


@pytest.fixture
def fake(up: FakeUpstream) -> FakeUpstream:
    """The shared fake upstream scripted as a judge that flags the harmful answer."""
    up.judge = verdict_by_answer
    up.base_model_answer = REPAIRED
    return up


class Proxy:
    def __init__(self, server: ThreadedServer, settings: Settings) -> None:
        self.server = server
        self.settings = settings
        self.url = f"{server.origin}/v1"

    @cached_property
    def _engine(self) -> Engine:
        """A synchronous view of the proxy's SQLite file, for the tests' assertions."""
        return create_engine(self.settings.store.db_url.replace("+aiosqlite", ""))

    def client(self, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("api_key", "unused")
        return openai.OpenAI(base_url=self.url, max_retries=0, **kwargs)

    def rows(self, model: type, **filters: Any) -> list[Any]:
        with Session(self._engine) as session:
            return list(session.scalars(select(model).filter_by(**filters)))

    def wait_rows(self, model: type, count: int, timeout_s: float = 10.0, **filters: Any) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            rows = self.rows(model, **filters)
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def metrics_text(self) -> str:
        """The proxy's Prometheus exposition, fetched as Prometheus does (with the metrics key)."""
        response = httpx.get(
            f"{self.server.origin}/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"}, timeout=10
        )
        response.raise_for_status()
        return response.text

    def metric(self, name: str) -> float:
        """A sample of the proxy's Prometheus metrics (unlabelled)."""
        for line in self.metrics_text().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        raise KeyError(name)

    def checks(self, **filters: Any) -> list[Check]:
        return self.rows(Check, **filters)

    def triples(self, **filters: Any) -> list[Triple]:
        return self.rows(Triple, **filters)


ProxyFactory = Callable[..., Proxy]


@pytest.fixture
def start_proxy(tmp_path: Path, fake: FakeUpstream) -> Iterator[ProxyFactory]:
    """Start a proxy with settings overrides; stopped (and drained) at the end of the test."""
    servers: list[ThreadedServer] = []

    def start(**overrides: Any) -> Proxy:
        values: dict[str, Any] = {
            "upstream_url": fake.url,
            "judge_model": "base-model",
            "db_url": f"sqlite+aiosqlite:///{tmp_path / 'conscience.db'}",
            "spool_path": tmp_path / "spool.jsonl",
            "writer_flush_interval_s": 0.02,
            "upstream_timeout_s": 5.0,
            "shutdown_grace_s": 1.0,  # a request a test left hanging must not hold the teardown
            "metrics_key": METRICS_KEY,
        }
        values.update(overrides)
        settings = Settings(**values)
        # Served as `conscience serve` serves it, on a free port.
        options = {k: v for k, v in uvicorn_config(settings).items() if k not in ("host", "port")}
        server = ThreadedServer(create_app(settings), **options)
        server.start()
        servers.append(server)
        return Proxy(server, settings)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def proxy(start_proxy: ProxyFactory) -> Proxy:
    return start_proxy()


def run(coro: Any) -> Any:
    return asyncio.run(coro)
