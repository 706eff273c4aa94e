"""The keep-alive transport against a raw loopback HTTP server that misbehaves on purpose."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.backends.transport import KeepAliveTransport
from tests.backends.raw_server import read_request


def client(url: str, **limits: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, transport=KeepAliveTransport(max_connections=limits.get("max", 4)),
                             timeout=httpx.Timeout(5.0, pool=limits.get("pool", 5)))


async def test_a_kept_alive_connection_closed_by_the_server_is_replaced(serve) -> None:
    async def one_answer_then_close(reader, writer, _) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()  # then the connection closes: an idle keep-alive timeout

    raw = await serve(one_answer_then_close)
    async with client(raw.url) as http:
        for _ in range(3):
            assert (await http.post("/x", content=b"{}")).text == "ok"
            await asyncio.sleep(0.05)
    assert raw.connections == 3


async def test_chunked_bodies_stream_and_the_connection_is_reused(serve) -> None:
    async def chunked(reader, writer, _) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in (b"data: 1\n\n", b"data: 2\n\n"):
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"0\r\n\r\n")

    raw = await serve(chunked)
    async with client(raw.url) as http:
        async with http.stream("POST", "/s", content=b"{}") as response:
            pieces = [piece async for piece in response.aiter_bytes()]
        assert b"".join(pieces) == b"data: 1\n\ndata: 2\n\n" and len(pieces) == 2
        assert (await http.post("/s", content=b"{}")).text == "data: 1\n\ndata: 2\n\n"
    assert raw.connections == 1


async def test_connection_close_is_honoured(serve) -> None:
    async def closing(reader, writer, _) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx")

    raw = await serve(closing)
    async with client(raw.url) as http:
        for _ in range(2):
            assert (await http.get("/")).text == "x"
    assert raw.connections == 2


async def test_one_write_per_request(serve) -> None:
    seen: list[bytes] = []

    async def record(reader, writer, _) -> None:
        seen.append(await reader.read(65536))  # one read gets all of it when it was one write
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")

    raw = await serve(record)
    async with client(raw.url) as http:
        assert (await http.post("/one", content=b'{"a": 1}', headers={"x-test": "1"})).status_code == 204
    assert seen[0].startswith(b"POST /one HTTP/1.1\r\n") and seen[0].endswith(b'\r\n\r\n{"a": 1}')
    assert b"x-test: 1" in seen[0].lower()


async def test_failures_are_httpx_errors(serve) -> None:
    async def garbage(reader, writer, _) -> None:
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")

    async def silent(reader, writer, _) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    async with client((await serve(garbage)).url) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/")
    async with httpx.AsyncClient(base_url=(await serve(silent)).url, timeout=0.2,
                                 transport=KeepAliveTransport(max_connections=1)) as http:
        for _ in range(2):  # the failed request gives its connection slot back
            with pytest.raises(httpx.ReadTimeout):
                await http.get("/")


async def test_the_connection_bound_queues_then_times_out(serve) -> None:
    async def slow(reader, writer, _) -> None:
        await read_request(reader)
        await asyncio.sleep(0.5)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")

    async with httpx.AsyncClient(base_url=(await serve(slow)).url,
                                 timeout=httpx.Timeout(5.0, pool=0.1),
                                 transport=KeepAliveTransport(max_connections=1)) as http:
        first = asyncio.create_task(http.get("/"))
        await asyncio.sleep(0.05)
        with pytest.raises(httpx.PoolTimeout):
            await http.get("/")
        assert (await first).text == "x"


async def test_refused_connections_are_connect_errors() -> None:
    async with client("http://127.0.0.1:9") as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/")
