"""How uvicorn serves the app: bounds on what one connection may hold.

uvicorn's httptools protocol (the one it picks when httptools is installed, as here) has no limit
on a request head's size and no timeout until a first response: a 200 MiB header was read into
memory, and connections that never send a byte stayed open. `HeadLimitedProtocol` adds both:
a head larger than `max_head_bytes` gets 431, and one not complete within `head_timeout_s` of
the connection (or of its first byte, on a kept-alive connection) closes the connection. A body
must then arrive within `body_timeout_s` of its head, with no pause between bytes longer than
`body_idle_timeout_s`, or the connection is closed (the app sees a disconnect).
uvicorn's own options bound the rest: idle keep-alive time, connections at once (503 beyond)
and how long SIGTERM waits for the requests in flight (`shutdown_grace_s`); the protocol tells
the app when that wait begins (service/shutdown.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import error_body
from service.settings import Settings
from service.shutdown import STATE_KEY, GracefulShutdown


class HeadLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on each request head's size and time.

    Sizes are counted as bytes arrive, before the parser buffers them, so a head is refused
    within one read (at most 256 KiB) past the limit. Only the head counts: a read that holds
    the end of the head (its blank line) and the start of the body — every long prompt sent in
    one write — counts up to that blank line; the body is bounded by `max_body_bytes`."""

    _END_OF_HEAD = b"\r\n\r\n"

    max_head_bytes = 64 * 1024
    head_timeout_s = 10.0
    body_timeout_s = 60.0
    body_idle_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes: int | None = 0  # of the request head being read; None once complete
        self._head_tail = b""  # the head's last bytes so far: its blank line may span two reads
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_deadline: asyncio.TimerHandle | None = None  # set while a body is being read
        self._body_idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte must not stay open

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._body_read()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown has begun (it calls this on every open connection): the
        app's clock starts, so that what the shutdown ends is told apart from the rest."""
        clock = self.app_state.get(STATE_KEY)
        if isinstance(clock, GracefulShutdown):
            clock.begin()
        super().shutdown()

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._head_bytes is not None:
            self._head_bytes += self._head_part(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse_head()
                return
            if self._head_timer is None:
                self._arm()
        elif self._body_deadline is not None:  # a byte of the body: the pause starts again
            self._restart_body_idle()
        super().data_received(data)

    def _head_part(self, data: bytes) -> int:
        """How many bytes of `data` belong to the head being read: up to and including its
        blank line when that is in `data`, else all of it."""
        seen = self._head_tail + data
        end = seen.find(self._END_OF_HEAD)
        self._head_tail = seen[-(len(self._END_OF_HEAD) - 1) :]
        if end < 0:
            return len(data)
        return max(end + len(self._END_OF_HEAD) - (len(seen) - len(data)), 0)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._head_tail = b""
        self._disarm()
        before = self.cycle
        # Until the message is complete, what arrives is its body (on_message_complete stops
        # these in the same read for a request without one).
        self._body_deadline = self.loop.call_later(self.body_timeout_s, self._body_timed_out)
        self._restart_body_idle()
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not before:  # a request's cycle, not yet run
            self.cycle.transport = OneWriteResponses(self.transport, self.loop)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._body_read()
        super().on_message_complete()
        self._head_bytes = 0  # what comes next on this connection is the next request's head
        self._head_tail = b""

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _restart_body_idle(self) -> None:
        if self._body_idle is not None:
            self._body_idle.cancel()
        self._body_idle = self.loop.call_later(self.body_idle_timeout_s, self._body_timed_out)

    def _body_read(self) -> None:
        for timer in (self._body_deadline, self._body_idle):
            if timer is not None:
                timer.cancel()
        self._body_deadline = self._body_idle = None

    def _body_timed_out(self) -> None:
        self._body_read()
        self.transport.close()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self.transport.close()

    def _refuse_head(self) -> None:
        self._disarm()
        body = orjson.dumps(error_body(
            f"Request header fields too large: the limit is {self.max_head_bytes} bytes.",
            "invalid_request_error",
        ))
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()


class OneWriteResponses:
    """A request cycle's view of its connection: the response head is held back until the
    first body write, and the two go out as one write (one syscall, one loopback segment)
    instead of uvicorn's two; on a small CPU each write costs about as much as the rest of a
    pass-through request's handling. A head that no body follows in the same turn of the event
    loop (a stream waiting for its first chunk) is sent at the end of that turn."""

    __slots__ = ("_transport", "_loop", "_held", "_first")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._first = True

    def write(self, data: bytes) -> None:
        if self._first:  # the head: uvicorn writes it alone
            self._first = False
            self._held = data
            self._loop.call_soon(self._flush)
            return
        if self._held is not None:
            data, self._held = self._held + data, None
        self._transport.write(data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def protocol_bounds(settings: Settings) -> dict[str, float]:
    """HeadLimitedProtocol's class attributes for these settings."""
    return {
        "max_head_bytes": settings.limits.max_header_bytes,
        "head_timeout_s": settings.limits.header_timeout_s,
        "body_timeout_s": settings.limits.body_timeout_s,
        "body_idle_timeout_s": settings.limits.body_idle_timeout_s,
    }


def head_limited_protocol(settings: Settings) -> type[HeadLimitedProtocol]:
    """The protocol class with these settings' bounds (uvicorn takes a class, not an instance)."""
    return type("HeadLimitedProtocol", (HeadLimitedProtocol,), protocol_bounds(settings))


def uvicorn_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of `uvicorn.run(app, **...)` for these settings: address, logging
    (ours, not uvicorn's) and every bound on what clients may hold."""
    return {
        "host": settings.serving.host,
        "port": settings.serving.port,
        "log_config": None,
        "access_log": False,
        "http": head_limited_protocol(settings),
        "timeout_keep_alive": settings.limits.keep_alive_timeout_s,
        "limit_concurrency": settings.limits.max_connections,
        # Then the requests still running are cancelled (503, their records say "shutdown").
        "timeout_graceful_shutdown": settings.serving.shutdown_grace_s,
    }
