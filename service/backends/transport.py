"""A lean HTTP/1.1 keep-alive transport for httpx, for the proxy's hot path to its upstream.

httpx's default transport (httpcore) writes a request's headers and body with separate
syscalls and, for every waiting request, scans every pooled connection; on a small CPU that is
most of the proxy's cost per request. This transport keeps httpx's API (client, requests,
responses, timeouts, exceptions) and does the minimum underneath: one write per request, a C
response parser (httptools), and a LIFO stack of idle keep-alive connections per origin.

It also bounds what one response may cost (`ResponseLimits`): the size of its head and of its
body, and the time of the whole call. httpx's timeouts are per wait, so an upstream trickling a
byte a second would otherwise hold a request for ever.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httptools
import httpx

from service import tracing

_READ_SIZE = 65536


class ResponseTooLarge(httpx.RemoteProtocolError):
    """The response's head or body is larger than its `ResponseLimits` allow."""


class DeadlineExceeded(httpx.TimeoutException):
    """The whole call (pool, connection, request, every byte of the response) took too long."""


@dataclass(frozen=True, slots=True)
class ResponseLimits:
    """What one call may cost; None: unbounded."""

    max_header_bytes: int | None = None
    max_body_bytes: int | None = None
    deadline_s: float | None = None


class _Parsed:
    """httptools callbacks: what has arrived of one response, against its limits."""

    def __init__(self, limits: ResponseLimits, deadline: float | None) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.limits = limits
        self.deadline = deadline  # loop time
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.keep_alive = False
        self.body: list[bytes] = []
        self.complete = False
        self.received = 0  # bytes fed to the parser
        self.body_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        # Only valid while parsing: the parser forgets it once the message is complete.
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.body_bytes += len(body)

    def check_size(self, request: httpx.Request) -> None:
        limit = self.limits.max_header_bytes
        if not self.headers_done and limit is not None and self.received > limit:
            raise ResponseTooLarge(f"response head over {limit} bytes", request=request)
        limit = self.limits.max_body_bytes
        if limit is not None and self.body_bytes > limit:
            raise ResponseTooLarge(f"response body over {limit} bytes", request=request)

    def on_message_complete(self) -> None:
        self.complete = True


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.transport.abort()


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, transport: KeepAliveTransport, origin: tuple[str, str, int],
                 connection: _Connection, parsed: _Parsed, request: httpx.Request,
                 read_timeout: float | None) -> None:
        self._transport = transport
        self._origin = origin
        self._connection = connection
        self._parsed = parsed
        self._request = request
        self._read_timeout = read_timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            chunks, self._parsed.body = self._parsed.body, []
            for chunk in chunks:
                yield chunk
            if self._parsed.complete:
                return
            await _feed(self._connection, self._parsed, self._request, self._read_timeout)

    async def aclose(self) -> None:
        if self._released:
            return
        self._released = True
        reusable = self._parsed.complete and self._parsed.keep_alive
        self._transport._release(self._origin, self._connection, reusable)


def _within(deadline: float | None, timeout: float | None, request: httpx.Request) -> float | None:
    """The wait allowed now: `timeout`, shortened to what is left before `deadline`."""
    if deadline is None:
        return timeout
    left = deadline - asyncio.get_running_loop().time()
    if left <= 0:
        raise DeadlineExceeded("the call ran past its deadline", request=request)
    return left if timeout is None else min(timeout, left)


async def _feed(connection: _Connection, parsed: _Parsed, request: httpx.Request,
                timeout: float | None) -> None:
    wait = _within(parsed.deadline, timeout, request)
    try:
        async with asyncio.timeout(wait):  # not wait_for: no task per read
            data = await connection.reader.read(_READ_SIZE)
    except TimeoutError as exc:
        if wait != timeout:
            raise DeadlineExceeded("the call ran past its deadline", request=request) from exc
        raise httpx.ReadTimeout("timed out waiting for the upstream", request=request) from exc
    except OSError as exc:
        raise httpx.ReadError(str(exc), request=request) from exc
    if not data:
        raise httpx.RemoteProtocolError("the upstream closed the connection mid-response", request=request)
    parsed.received += len(data)
    try:
        parsed.parser.feed_data(data)
    except httptools.HttpParserError as exc:
        raise httpx.RemoteProtocolError(f"malformed response: {exc}", request=request) from exc
    parsed.check_size(request)


class KeepAliveTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_connections: int, limits: ResponseLimits | None = None) -> None:
        self._slots = asyncio.Semaphore(max_connections)
        self._limits = limits or ResponseLimits()
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await tracing.traced_upstream_send(request, self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        url = request.url
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        payload = _serialise(request)
        deadline_s = self._limits.deadline_s
        deadline = None if deadline_s is None else asyncio.get_running_loop().time() + deadline_s
        pool_wait = _within(deadline, timeouts.get("pool"), request)
        try:
            async with asyncio.timeout(pool_wait):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise httpx.PoolTimeout("no free upstream connection", request=request) from exc
        try:
            connect_wait = _within(deadline, timeouts.get("connect"), request)
            connection = await self._checkout(origin, request, connect_wait)
            parsed = _Parsed(self._limits, deadline)
            try:
                connection.writer.write(payload)
                while not parsed.headers_done:
                    await _feed(connection, parsed, request, timeouts.get("read"))
            except BaseException:
                # Never retried here: once written, the request may have reached the server,
                # and a second send could run a generation twice.
                connection.close()
                raise
        except BaseException:
            self._slots.release()
            raise
        stream = _ResponseStream(self, origin, connection, parsed, request, timeouts.get("read"))
        return httpx.Response(parsed.parser.get_status_code(), headers=parsed.headers,
                              stream=stream, extensions={"http_version": b"HTTP/1.1"})

    async def _checkout(self, origin: tuple[str, str, int], request: httpx.Request,
                        timeout: float | None) -> _Connection:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            # An idle connection the server closed has its EOF already read by the event loop.
            if not connection.reader.at_eof() and not connection.writer.transport.is_closing():
                return connection
            connection.close()
        scheme, host, port = origin
        context = None
        if scheme == "https":
            self._ssl = self._ssl or ssl.create_default_context()
            context = self._ssl
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context, limit=_READ_SIZE), timeout
            )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}", request=request) from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        return _Connection(reader, writer)

    def _release(self, origin: tuple[str, str, int], connection: _Connection, reusable: bool) -> None:
        if reusable:
            self._idle.setdefault(origin, []).append(connection)
        else:
            connection.close()
        self._slots.release()

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()


def _serialise(request: httpx.Request) -> bytes:
    """Request line, headers and body as one buffer: one write, one segment on loopback."""
    body = request.read()
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), request.url.raw_path)]
    lines.extend(b"%s: %s\r\n" % (name, value) for name, value in request.headers.raw)
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)
