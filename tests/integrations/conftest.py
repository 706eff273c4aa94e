"""A Conscience proxy for the integration tests, up for a whole module (the gateways started in
front of it take seconds), in front of the session's fake upstream, with a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.api.server_limits import uvicorn_config
from service.app import create_app
from service.settings import Settings
from tests.api.conftest import METRICS_KEY, REPAIRED, Proxy, fake, verdict_by_answer  # noqa: F401
from tests.fakes.server import ThreadedServer
from tests.fakes.upstream import FakeUpstream


@pytest.fixture(scope="module")
def conscience(tmp_path_factory: pytest.TempPathFactory, upstream_server: FakeUpstream) -> Iterator[Proxy]:
    """Conscience on a loopback port; each test's `fake` fixture re-scripts the upstream."""
    folder: Path = tmp_path_factory.mktemp("conscience")
    settings = Settings(
        upstream_url=upstream_server.url, judge_model="base-model",
        db_url=f"sqlite+aiosqlite:///{folder / 'conscience.db'}", spool_path=folder / "spool.jsonl",
        writer_flush_interval_s=0.02, upstream_timeout_s=5.0, shutdown_grace_s=1.0, metrics_key=METRICS_KEY,
    )
    options = {k: v for k, v in uvicorn_config(settings).items() if k not in ("host", "port")}
    server = ThreadedServer(create_app(settings), **options)
    server.start()
    yield Proxy(server, settings)
    server.stop()
