"""The served proxy (real uvicorn, loopback) bounds request heads in size and time."""

from __future__ import annotations

import socket
import time

import httpx

from service.api.server_limits import uvicorn_config
from service.settings import Settings
from tests.api.conftest import Proxy, ProxyFactory


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
                        max_header_bytes=20_000, header_timeout_s=3.0)
    config = uvicorn_config(settings)
    assert (config["host"], config["port"]) == ("0.0.0.0", 9000)
    assert (config["timeout_keep_alive"], config["limit_concurrency"]) == (7, 50)
    assert (config["http"].max_head_bytes, config["http"].head_timeout_s) == (20_000, 3.0)
