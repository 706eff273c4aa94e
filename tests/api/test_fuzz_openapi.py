"""Fuzz every operation of the served OpenAPI document (schemathesis, bounded examples): the
served proxy answers anything with a status below 500, and every error in OpenAI's shape."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from service.api.server_limits import uvicorn_config  # noqa: E402
from service.app import create_app  # noqa: E402
from service.openapi_spec import served_openapi  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests.api.conftest import verdict_by_answer  # noqa: E402
from tests.fakes.server import ThreadedServer  # noqa: E402
from tests.fakes.upstream import FakeUpstream  # noqa: E402

ADMIN_KEY = "admin-secret-for-fuzzing"
EXAMPLES_PER_OPERATION = 25

schema = schemathesis.openapi.from_dict(served_openapi())


@pytest.fixture(scope="module")
def origin(upstream_server: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    upstream_server.reset()
    upstream_server.judge = verdict_by_answer
    path = tmp_path_factory.mktemp("fuzz")
    app_settings = Settings(
        upstream_url=upstream_server.url, judge_model="base-model", admin_key=ADMIN_KEY,
        db_url=f"sqlite+aiosqlite:///{path / 'conscience.db'}", spool_path=path / "spool.jsonl",
        upstream_timeout_s=5.0, writer_flush_interval_s=0.02, shutdown_grace_s=1.0,
    )
    options = {k: v for k, v in uvicorn_config(app_settings).items() if k not in ("host", "port")}
    with ThreadedServer(create_app(app_settings), **options) as server:
        yield server.origin


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_input_gets_a_5xx(case, origin: str) -> None:  # type: ignore[no-untyped-def]
    response = case.call(base_url=origin, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
    content_type = (response.headers.get("content-type") or [""])[0]
    if response.status_code >= 400 and content_type.startswith("application/json"):
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}, response.text
