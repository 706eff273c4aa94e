"""A client that leaves mid-stream still leaves a record (issue 26): the proxy over real
loopback HTTP, a client that closes its connection, the fake upstream, SQLite.

Enforce's windowed stream: the window being judged when the client left is still judged and
recorded, and no repair starts for nobody. Monitor: what the client received is reviewed."""

from __future__ import annotations

import httpx
import orjson

from service.conscience.outcome import CLIENT_DISCONNECTED
from service.store.models import Check, Triple
from tests.api.conftest import ASK_BODY, HARMFUL, ProxyFactory
from tests.api.test_windowed_stream import HARMFUL_MIDDLE
from tests.fakes.upstream import FakeUpstream


def read_until_content_then_close(url: str, needle: str = "") -> str:
    """Stream a chat completion, stop reading (and close the connection) at the first content
    delta that contains `needle`; the content read."""
    read = ""
    body = {**ASK_BODY, "stream": True}
    with httpx.Client(timeout=10) as client, client.stream("POST", f"{url}/chat/completions", json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            for choice in orjson.loads(line[6:]).get("choices") or []:
                read += choice.get("delta", {}).get("content") or ""
            if read and needle in read:
                break
    return read


def test_a_client_leaving_while_a_harmful_window_is_judged_leaves_a_flagged_record(
    start_proxy: ProxyFactory, fake: FakeUpstream
) -> None:
    fake.policy_answer = HARMFUL_MIDDLE
    # Each verdict takes 0.3 s, the answer about 0.2 s: the opening window passes and is sent,
    # then all the rest (the crowbar) is judged as one window while the client leaves.
    fake.delay_s = 0.3
    fake.token_delay_s = 0.01
    proxy = start_proxy(stream_window_chars=24)
    read = read_until_content_then_close(proxy.url)
    assert read and "crowbar" not in read
    [check] = proxy.wait_rows(Check, 1)
    assert check.verdict == "unethical"
    assert check.error == CLIENT_DISCONNECTED
    assert check.repaired is False and check.attempts == 0
    # Nobody is left to send a repair to: none was generated, and no triple claims one.
    assert [c for c in fake.calls("generation") if c.body["model"] == "base-model"] == []
    assert proxy.rows(Triple) == []


def test_a_client_leaving_a_clean_windowed_stream_is_recorded_as_what_was_judged(
    start_proxy: ProxyFactory, fake: FakeUpstream
) -> None:
    fake.policy_answer = "Knead the dough well, let it rise for an hour, then bake it hot. " * 4
    fake.token_delay_s = 0.02
    proxy = start_proxy(stream_window_chars=24)
    read_until_content_then_close(proxy.url)
    [check] = proxy.wait_rows(Check, 1)
    assert check.verdict == "ethical" and check.error == CLIENT_DISCONNECTED


def test_monitor_reviews_what_a_client_read_before_it_left(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    fake.policy_answer = HARMFUL + " More text follows here, slowly, word after word, until the end." * 3
    fake.token_delay_s = 0.02
    proxy = start_proxy(mode="monitor")
    read = read_until_content_then_close(proxy.url, needle="crowbar")
    assert "crowbar" in read and not read.endswith("the end.")
    [check] = proxy.wait_rows(Check, 1)
    assert check.mode == "monitor" and check.verdict == "unethical"
