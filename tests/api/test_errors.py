"""Every error a client can see is OpenAI-shaped, with the right status (docs/architecture.md, invariant 6)."""

from __future__ import annotations

import socket

import httpx
import openai
import orjson
import pytest

from tests.api.conftest import ASK_BODY, Proxy, ProxyFactory
from tests.fakes.upstream import FakeUpstream


def assert_openai_error(response: httpx.Response, status: int, *, contains: str = "") -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert contains.lower() in error["message"].lower()
    assert "Traceback" not in response.text
    return error


def post(proxy: Proxy, path: str, **kwargs) -> httpx.Response:
    return httpx.post(f"{proxy.url}{path}", timeout=30, **kwargs)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({**ASK_BODY, "temperature": 7}, "temperature"),
        ({**ASK_BODY, "n": 0}, "n"),
        ({**ASK_BODY, "conscience": {"mode": "sometimes"}}, "conscience.mode"),
    ],
)
def test_invalid_bodies_are_400(proxy: Proxy, body: dict, param: str) -> None:
    error = assert_openai_error(post(proxy, "/chat/completions", json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_an_unknown_framework_is_400_where_clients_may_choose_one_else_403(start_proxy: ProxyFactory) -> None:
    body = {**ASK_BODY, "conscience": {"framework": "nope"}}
    error = assert_openai_error(post(start_proxy(client_frameworks="*"), "/chat/completions", json=body), 400)
    assert (error["type"], error["param"]) == ("invalid_request_error", "conscience.framework")
    error = assert_openai_error(post(start_proxy(), "/chat/completions", json=body), 403)
    assert (error["code"], error["param"]) == ("framework_not_allowed", "conscience.framework")


def test_malformed_json_is_400(proxy: Proxy) -> None:
    response = post(proxy, "/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    error = assert_openai_error(response, 400, contains="We could not parse the JSON body of your request")
    # Not the parser's offset as a parameter ("28: JSON decode error", param "28"), as before.
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", None, None)
    assert "expecting property name" in error["message"].lower()  # what the parser saw, and where


def test_a_json_body_without_a_content_type_is_parsed(proxy: Proxy, fake: FakeUpstream) -> None:
    # OpenAI's API and curl users send JSON without the header; it is no "valid dictionary" error.
    response = post(proxy, "/chat/completions", content=orjson.dumps(ASK_BODY))
    assert response.status_code == 200, response.text
    assert fake.calls("generation")[-1].body["messages"] == ASK_BODY["messages"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_body_declared_not_json_is_415(proxy: Proxy, content_type: str) -> None:
    response = post(proxy, "/chat/completions", content=orjson.dumps(ASK_BODY),
                    headers={"content-type": content_type})
    error = assert_openai_error(response, 415, contains="Content-Type must be application/json")
    assert content_type in error["message"]
    assert (error["type"], error["param"]) == ("invalid_request_error", None)


def test_unknown_route_is_404(proxy: Proxy) -> None:
    assert_openai_error(httpx.get(f"{proxy.url}/nothing-here"), 404, contains="unknown route")


def test_body_over_the_limit_is_413(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(max_body_bytes=1000)
    big = {**ASK_BODY, "messages": [{"role": "user", "content": "x" * 5000}]}
    assert_openai_error(post(proxy, "/chat/completions", json=big), 413, contains="too large")

    def chunked():
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        yield b"y" * 5000
        yield b'"}]}'

    response = post(proxy, "/chat/completions", content=chunked(), headers={"content-type": "application/json"})
    assert_openai_error(response, 413, contains="too large")


def test_upstream_4xx_passes_through(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.fail_status = 404
    fake.fail_error = {
        "message": "The model `x` does not exist.", "type": "NotFoundError", "param": "model", "code": 404,
    }
    with pytest.raises(openai.NotFoundError) as caught:
        proxy.client().chat.completions.create(model="x", messages=ASK_BODY["messages"])
    assert "does not exist" in str(caught.value)


def test_upstream_5xx_is_502(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.fail_status = 503
    error = assert_openai_error(post(proxy, "/chat/completions", json=ASK_BODY), 502)
    assert error["type"] == "upstream_unavailable"


def test_unreachable_upstream_is_502(start_proxy: ProxyFactory) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    proxy = start_proxy(upstream_url=f"http://127.0.0.1:{port}/v1", upstream_connect_retries=0)
    assert_openai_error(post(proxy, "/chat/completions", json=ASK_BODY), 502, contains="unreachable")
    assert_openai_error(post(proxy, "/chat/completions", json={**ASK_BODY, "stream": True}), 502)
    assert httpx.get(f"{proxy.server.origin}/readyz").status_code == 503


def test_slow_upstream_is_504(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start_proxy(upstream_timeout_s=0.3)
    fake.delay_s = 2.0
    assert_openai_error(post(proxy, "/chat/completions", json=ASK_BODY), 504)


def test_error_mid_stream_is_an_error_event(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start_proxy(mode="monitor")
    fake.policy_answer = "one two three four five six"
    fake.stream_error_after = 2
    with httpx.stream("POST", f"{proxy.url}/chat/completions", json={**ASK_BODY, "stream": True}) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert any('"error"' in event for event in events)
    assert events[-1] == "data: [DONE]"


def test_missing_model_without_a_configured_one_is_400(proxy: Proxy) -> None:
    error = assert_openai_error(post(proxy, "/chat/completions", json={"messages": ASK_BODY["messages"]}), 400)
    assert error["param"] == "model"


def test_token_id_prompts_are_refused_while_checking(proxy: Proxy) -> None:
    response = post(proxy, "/completions", json={"model": "m", "prompt": [1, 2, 3]})
    assert_openai_error(response, 400, contains="token-id")


def test_ready_and_healthy(proxy: Proxy) -> None:
    assert httpx.get(f"{proxy.server.origin}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{proxy.server.origin}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
