"""Amplification bounds: `n` per request, reviews at once, monitor reviews in the background."""

from __future__ import annotations

import threading
import time

import httpx

from tests.api.conftest import ASK_BODY, Proxy, ProxyFactory
from tests.api.test_errors import assert_openai_error
from tests.fakes.upstream import FakeUpstream


def post(proxy: Proxy, body: dict) -> httpx.Response:
    return httpx.post(f"{proxy.url}/chat/completions", json=body, timeout=30)


def test_n_above_the_limit_is_400(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start_proxy(max_n=4)
    error = assert_openai_error(post(proxy, {**ASK_BODY, "n": 5}), 400, contains="at most 4")
    assert error["param"] == "n"
    assert fake.requests == []  # refused before anything was generated
    assert post(proxy, {**ASK_BODY, "n": 4}).status_code == 200


def assert_429(response: httpx.Response) -> None:
    error = assert_openai_error(response, 429, contains="retry")
    assert error["type"] == "rate_limit_error" and error["code"] == "reviews_saturated"
    assert response.headers["retry-after"] == "1"


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_reviews_beyond_the_bound_are_429(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start_proxy(max_concurrent_reviews=2, max_n=2)
    fake.delay_s = 0.5  # every upstream call: the first request's reviews are still running
    first: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: first.append(post(proxy, {**ASK_BODY, "n": 2})))
    worker.start()
    wait_for(lambda: fake.calls("verdict"))
    generated = len(fake.calls("generation"))
    assert_429(post(proxy, ASK_BODY))
    assert len(fake.calls("generation")) == generated  # refused before its answer was generated
    worker.join()
    assert first[0].status_code == 200
    assert post(proxy, ASK_BODY).status_code == 200  # room again


def test_pending_monitor_reviews_beyond_the_bound_are_429(
    start_proxy: ProxyFactory, fake: FakeUpstream
) -> None:
    proxy = start_proxy(mode="monitor", max_pending_monitor_reviews=1, max_n=1)
    fake.delay_s = 0.5
    assert post(proxy, ASK_BODY).status_code == 200  # its review now runs in the background
    assert_429(post(proxy, ASK_BODY))
    wait_for(lambda: len(proxy.checks()) == 1)
    assert post(proxy, ASK_BODY).status_code == 200
