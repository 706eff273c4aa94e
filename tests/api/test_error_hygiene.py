"""Bad input and bad upstream answers are OpenAI-shaped 4xx/5xx, never a 500, and clients learn
what failed without the upstream's address or words (those go to the log)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.api.conftest import ASK_BODY, Proxy, ProxyFactory
from tests.api.test_errors import assert_openai_error
from tests.fakes.server import ThreadedServer
from tests.fakes.upstream import FakeUpstream

INTERNAL = "traceback at /srv/vllm/engine.py on 10.1.2.3"


def post(proxy: Proxy, content: bytes, path: str = "/chat/completions") -> httpx.Response:
    return httpx.post(
        f"{proxy.url}{path}", content=content, headers={"content-type": "application/json"}, timeout=30
    )


@pytest.mark.parametrize("mode", ["enforce", "off"])
@pytest.mark.parametrize("path", ["/chat/completions", "/completions", "/embeddings"])
def test_a_lone_surrogate_is_400(start_proxy: ProxyFactory, mode: str, path: str) -> None:
    proxy = start_proxy(mode=mode)
    text = '"hi \\ud800 there"'
    bodies = {
        "/chat/completions": '{"model": "m", "messages": [{"role": "user", "content": %s}]}',
        "/completions": '{"model": "m", "prompt": %s}',
        "/embeddings": '{"model": "m", "input": %s}',
    }
    response = post(proxy, (bodies[path] % text).encode(), path)
    error = assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"


def test_a_surrogate_pair_is_text(proxy: Proxy, fake: FakeUpstream) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "smile \\ud83d\\ude00"}]}'
    assert post(proxy, body).status_code == 200
    assert fake.calls("generation")[0].body["messages"][0]["content"] == "smile \N{GRINNING FACE}"


@pytest.fixture
def odd_upstream() -> Iterator[list[Any]]:
    """An upstream whose every answer is `answer[0]` (bytes), with status 200."""
    answer: list[Any] = [b"{}"]

    async def reply(_: Request) -> Response:
        return Response(answer[0], media_type="application/json")

    app = Starlette(routes=[Route("/{path:path}", reply, methods=["GET", "POST"])])
    with ThreadedServer(app, lifespan="off", graceful_timeout_s=0.2) as server:
        answer.append(server.origin)
        yield answer


@pytest.mark.parametrize("payload", [b'{"choices": "x"}', b"[1, 2]", b'{"choices": [7]}'])
@pytest.mark.parametrize("mode", ["enforce", "off"])
def test_a_200_that_is_not_a_completion_is_502(
    start_proxy: ProxyFactory, odd_upstream: list[Any], payload: bytes, mode: str
) -> None:
    odd_upstream[0] = payload
    proxy = start_proxy(upstream_url=f"{odd_upstream[1]}/v1", mode=mode)
    for body in (ASK_BODY, {"model": "m", "prompt": "Hi"}):
        path = "/chat/completions" if "messages" in body else "/completions"
        response = httpx.post(f"{proxy.url}{path}", json=body, timeout=30)
        assert_openai_error(response, 502, contains="cannot read")


def test_upstream_failures_show_no_internal_detail(
    start_proxy: ProxyFactory, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = start_proxy()
    fake.fail_status = 500
    fake.fail_error = {"message": INTERNAL, "type": "server_error", "param": None, "code": None}
    with caplog.at_level(logging.WARNING, "conscience.upstream"):
        response = httpx.post(
            f"{proxy.url}/chat/completions", json=ASK_BODY, timeout=30,
            headers={"x-request-id": "req-hygiene-1"},
        )
    error = assert_openai_error(response, 502, contains="model server failed")
    for leaked in (INTERNAL, "10.1.2.3", fake.url, str(fake.origin.rsplit(":", 1)[1])):
        assert leaked not in response.text
    [logged] = [r for r in caplog.records if INTERNAL in r.getMessage()]
    assert logged.levelno == logging.WARNING and fake.url in logged.getMessage()
    assert error["type"] == "upstream_unavailable"


def test_an_unreachable_upstream_is_not_located(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(upstream_url="http://127.0.0.1:9/v1", upstream_connect_retries=0)
    for body in (ASK_BODY, {**ASK_BODY, "stream": True}):
        response = httpx.post(f"{proxy.url}/chat/completions", json=body, timeout=30)
        assert_openai_error(response, 502, contains="unreachable")
        assert "127.0.0.1" not in response.text and ":9" not in response.text
    ready = httpx.get(f"{proxy.server.origin}/readyz", timeout=30)
    assert ready.status_code == 503 and "127.0.0.1" not in ready.text
