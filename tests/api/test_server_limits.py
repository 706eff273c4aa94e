"""The served proxy (real uvicorn, loopback) bounds request heads in size and time, and sends a
response's head with its body in one write."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx

from service.api.server_limits import OneWriteResponses, head_limited_protocol, uvicorn_config
from service.settings import Settings
from tests.api.conftest import Proxy, ProxyFactory
from tests.fakes.server import ThreadedServer


def connect(proxy: Proxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.server.port), timeout=5)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_head_over_the_limit_is_431_and_closed(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(max_header_bytes=16_384)
    with connect(proxy) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(64):  # 4 MiB, were it all read
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the proxy before the flood ended
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b'"invalid_request_error"' in answer
    ordinary = httpx.get(f"{proxy.server.origin}/healthz", headers={"X-Fine": "b" * 8000})
    assert ordinary.status_code == 200


def test_silent_and_slow_clients_are_dropped(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(header_timeout_s=0.3)
    with connect(proxy) as silent, connect(proxy) as slow:
        started = time.monotonic()
        for byte in b"GET /healthz HTTP/1.1\r\n":
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.05)
        assert read_all(silent) == b"" and read_all(slow) == b""
        assert time.monotonic() - started < 3
    # A client that sends its head in time is served, and again on the kept-alive connection.
    with httpx.Client(base_url=proxy.server.origin) as client:
        for _ in range(2):
            assert client.get("/healthz").status_code == 200
            time.sleep(0.4)  # idle longer than the head timeout, shorter than keep-alive


def test_uvicorn_config_carries_every_bound() -> None:
    settings = Settings(host="0.0.0.0", port=9000, keep_alive_timeout_s=7, max_connections=50,
                        max_header_bytes=20_000, header_timeout_s=3.0, body_timeout_s=30.0,
                        body_idle_timeout_s=4.0, shutdown_grace_s=12.5)
    config = uvicorn_config(settings)
    assert (config["host"], config["port"]) == ("0.0.0.0", 9000)
    assert (config["timeout_keep_alive"], config["limit_concurrency"]) == (7, 50)
    assert (config["http"].max_head_bytes, config["http"].head_timeout_s) == (20_000, 3.0)
    assert (config["http"].body_timeout_s, config["http"].body_idle_timeout_s) == (30.0, 4.0)
    assert config["timeout_graceful_shutdown"] == 12.5


class _Recorded:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"extra {name}"


async def test_a_response_head_and_body_go_out_in_one_write() -> None:
    transport = _Recorded()
    view = OneWriteResponses(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    view.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    view.write(b"{}")
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    view.write(b"more")  # after the head, writes pass straight through
    await asyncio.sleep(0)
    assert transport.writes[1:] == [b"more"] and view.get_extra_info("peername") == "extra peername"


async def test_a_head_without_a_body_yet_is_sent_at_the_end_of_the_loop_turn() -> None:
    transport = _Recorded()
    view = OneWriteResponses(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    view.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    assert transport.writes == []
    await asyncio.sleep(0)
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    held = OneWriteResponses(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    held.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
    held.close()  # closing sends what is held first
    assert transport.writes[-1].startswith(b"HTTP/1.1 204") and transport.closed


def test_a_stream_head_reaches_the_client_before_its_first_chunk() -> None:
    async def slow_stream(scope: dict, receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await asyncio.sleep(0.5)
        await send({"type": "http.response.body", "body": b"late", "more_body": False})

    with ThreadedServer(slow_stream, lifespan="off", http=head_limited_protocol(Settings())) as server:
        started = time.monotonic()
        with httpx.stream("GET", server.origin, timeout=5) as response:
            assert response.status_code == 200
            assert time.monotonic() - started < 0.4  # the head did not wait for the body
            assert response.read() == b"late"
        with httpx.Client(base_url=server.origin) as client:  # and on a kept-alive connection
            assert [client.get("/").text for _ in range(2)] == ["late", "late"]


def _post(path: bytes, body: bytes, *, expect_continue: bool) -> bytes:
    head = (
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + (b"Expect: 100-continue\r\n" if expect_continue else b"")
        + b"Content-Length: %d\r\n\r\n" % len(body)
    )
    return head + body


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response on a kept-alive connection (skipping a 100 Continue): its status and body."""
    buffer = b""
    while True:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"the connection closed mid-response: {buffer[:200]!r}"
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status == 100:
            continue
        length = int(next(
            line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        ))
        while len(buffer) < length:
            buffer += sock.recv(65536)
        return status, buffer[:length]


def test_long_bodies_never_count_against_the_head_limit(start_proxy: ProxyFactory) -> None:
    """A body that arrives in the same read as its head is not head: long prompts (64 KiB to
    4 MiB, well under the body limit) are served on every try, sent in one write or in many,
    with and without `Expect: 100-continue`, one after another on a kept-alive connection."""
    proxy = start_proxy(max_header_bytes=16_384)
    sizes = [64 * 1024, 300 * 1024, 1024 * 1024, 4 * 1024 * 1024 - 4096]
    with connect(proxy) as sock:
        for size in sizes:
            for expect_continue in (False, True):
                for pieces in (1, 7):
                    # Not JSON on purpose: the proxy reads the whole body and answers 400 itself.
                    request = _post(b"/v1/chat/completions", b"x" * size, expect_continue=expect_continue)
                    step = -(-len(request) // pieces)
                    for start in range(0, len(request), step):
                        sock.sendall(request[start : start + step])
                    status, body = _read_response(sock)
                    assert status == 400, (size, expect_continue, pieces, status, body[:200])
                    assert b"invalid_request_error" in body
        # The blank line that ends the head split across two reads, a megabyte of body after it.
        request = _post(b"/v1/chat/completions", b"y" * 1024 * 1024, expect_continue=False)
        cut = request.index(b"\r\n\r\n") + 3
        sock.sendall(request[:cut])
        time.sleep(0.05)
        sock.sendall(request[cut:])
        assert _read_response(sock)[0] == 400
        # The same connection still refuses a head that is too large.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 431 ")


def _trickle(sock: socket.socket, every_s: float, limit_s: float) -> float:
    """Send a head promising 1,000 bytes of body, then one byte every `every_s` until the
    proxy closes the connection; the seconds that took (or `limit_s` if it never did)."""
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
    started = time.monotonic()
    sock.settimeout(every_s)
    while time.monotonic() - started < limit_s:
        try:
            sock.sendall(b"x")
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
    return limit_s


def test_slow_bodies_do_not_hold_connections(start_proxy: ProxyFactory) -> None:
    """A body trickled in (a byte now and then, each pause under the head timeout) was held
    open forever once its head was complete: its pauses and its whole time are bounded now."""
    proxy = start_proxy(body_idle_timeout_s=0.4, body_timeout_s=1.5, header_timeout_s=5.0)
    with connect(proxy) as paused:  # pauses longer than the idle bound
        assert _trickle(paused, every_s=0.8, limit_s=10) < 3
    with connect(proxy) as trickled:  # each pause short, the whole too long
        assert 1.2 < _trickle(trickled, every_s=0.1, limit_s=10) < 4
    # A body that arrives in time is read and answered, and the kept-alive connection stays usable.
    with connect(proxy) as sock:
        for _ in range(2):
            sock.sendall(_post(b"/v1/chat/completions", b"z" * 5000, expect_continue=False))
            assert _read_response(sock)[0] == 400
            time.sleep(0.6)  # longer than the body's idle bound, between requests: not a body pause
