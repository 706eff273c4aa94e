"""Amplification bounds: `n` per request, reviews at once, monitor reviews in the background."""

from __future__ import annotations

import threading
import time

import httpx

from service.store.models import Check
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


# --- a batch of prompts: each prompt's `n` choices count (issue 26) ---------------------------
def complete(proxy: Proxy, body: dict) -> httpx.Response:
    return httpx.post(f"{proxy.url}/completions", json={"model": "policy", **body}, timeout=30)


def unchecked_total(proxy: Proxy, reason: str) -> float:
    """conscience_unchecked_total summed over frameworks and outcomes, for one reason."""
    text = proxy.metrics_text()
    return sum(
        float(line.split()[-1]) for line in text.splitlines()
        if line.startswith("conscience_unchecked_total{") and f'reason="{reason}"' in line
    )


def test_prompts_times_n_above_max_n_is_400(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start_proxy(max_n=8, allow_weaker_mode=True)
    error = assert_openai_error(
        complete(proxy, {"prompt": ["Tell me a story."] * 16, "n": 2}), 400, contains="at most 8"
    )
    assert error["param"] == "prompt" and "16 prompts × n = 2: 32 choices" in error["message"]
    # Mode off judges nothing, but still generates prompts × n: token-id prompts count too.
    off = complete(proxy, {"prompt": [[1, 2], [3], [4]], "n": 3, "conscience": {"mode": "off"}})
    assert assert_openai_error(off, 400, contains="at most 8")["param"] == "prompt"
    # `best_of` choices are generated upstream for each prompt, though only `n` come back.
    best_of = complete(proxy, {"prompt": ["a", "b"], "n": 1, "best_of": 5})
    assert assert_openai_error(best_of, 400, contains="at most 8")["param"] == "best_of"
    assert fake.requests == []  # refused before anything was generated
    assert complete(proxy, {"prompt": ["a", "b", "c", "d"], "n": 2}).status_code == 200


def test_a_batch_beyond_the_review_room_is_429_before_generation(
    start_proxy: ProxyFactory, fake: FakeUpstream
) -> None:
    proxy = start_proxy(max_concurrent_reviews=4, max_n=4)
    fake.delay_s = 0.5
    first: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: first.append(post(proxy, {**ASK_BODY, "n": 2})))
    worker.start()
    wait_for(lambda: fake.calls("generation"))  # two of the four review slots: taken
    assert_429(complete(proxy, {"prompt": ["a", "b", "c"], "n": 1}))  # three more: no room
    assert len(fake.calls("generation")) == 1  # refused before its answers were generated
    worker.join()
    assert first[0].status_code == 200
    assert complete(proxy, {"prompt": ["a", "b", "c"], "n": 1}).status_code == 200  # room again


def test_monitor_reviews_are_charged_before_generation(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    """Two monitor requests at once used to be admitted together; the second's reviews were
    then skipped with a log line, its answer never judged nor recorded."""
    proxy = start_proxy(mode="monitor", max_pending_monitor_reviews=2, max_n=2)
    fake.delay_s = 0.5
    first: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: first.append(complete(proxy, {"prompt": ["a", "b"]})))
    worker.start()
    wait_for(lambda: fake.calls("generation"))  # still generating: its reviews hold the room
    assert_429(complete(proxy, {"prompt": "c"}))
    assert len(fake.calls("generation")) == 1
    worker.join()
    assert first[0].status_code == 200
    assert first[0].json()["conscience"]["verdict"] == "pending"
    # Every answer the first request returned is judged and recorded.
    assert len(proxy.wait_rows(Check, len(first[0].json()["choices"]))) == len(first[0].json()["choices"])


def test_monitor_overflow_record_unchecked_records_and_counts(
    start_proxy: ProxyFactory, fake: FakeUpstream
) -> None:
    proxy = start_proxy(
        mode="monitor", max_pending_monitor_reviews=1, max_n=1, monitor_overflow="record_unchecked"
    )
    fake.delay_s = 0.5
    first: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: first.append(post(proxy, ASK_BODY)))
    worker.start()
    wait_for(lambda: fake.calls("generation"))
    second = post(proxy, ASK_BODY)  # no room for its review: answered, recorded as unchecked
    assert second.status_code == 200
    assert second.json()["conscience"]["verdict"] == "unchecked"
    worker.join()
    assert first[0].json()["conscience"]["verdict"] == "pending"
    checks = proxy.wait_rows(Check, 2)
    by_request = {check.request_id: check.verdict for check in checks}
    assert by_request[second.json()["conscience"]["request_id"]] == "unchecked"
    assert by_request[first[0].json()["conscience"]["request_id"]] != "unchecked"  # reviewed
    assert unchecked_total(proxy, "review_overflow") == 1


def test_streams_give_their_review_slots_back(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    """Slots charged at admission are given back when a stream ends: windowed enforce, buffered
    enforce (a batch), monitor after its background review, and a stream the upstream broke."""
    enforce = start_proxy(max_concurrent_reviews=2, max_pending_monitor_reviews=2, max_n=2)
    for _ in range(3):
        with enforce.client().chat.completions.create(model="policy", messages=ASK_BODY["messages"], stream=True) as s:
            assert list(s)[-1].model_extra["conscience"]["verdict"] == "ethical"
        with enforce.client().completions.create(model="policy", prompt=["a", "b"], stream=True) as s:
            assert list(s)[-1].model_extra["conscience"]["verdict"] == "ethical"
    monitor = start_proxy(mode="monitor", max_pending_monitor_reviews=1, max_n=1)
    for count in range(1, 4):
        with monitor.client().chat.completions.create(model="policy", messages=ASK_BODY["messages"], stream=True) as s:
            assert list(s)[-1].model_extra["conscience"]["verdict"] == "pending"
        assert len(monitor.wait_rows(Check, count, mode="monitor")) == count  # reviewed: the slot is free
    fake.stream_error_after = 1
    with monitor.client().chat.completions.create(model="policy", messages=ASK_BODY["messages"], stream=True) as s:
        try:
            list(s)
        except Exception:  # the upstream's error, relayed in the stream
            pass
    fake.stream_error_after = None
    assert post(monitor, ASK_BODY).status_code == 200
