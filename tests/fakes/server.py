"""Serve any ASGI app over real loopback HTTP from a background thread, for tests.

The socket is bound before the thread starts, so the port is known at once and two servers
never race for one; uvicorn then serves on that socket in its own event loop, leaving the
test's loop (and pytest-asyncio) untouched.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

STARTUP_TIMEOUT_S = 10.0


class ThreadedServer:
    """`with ThreadedServer(app) as server:` serves `app` at `server.origin` until the block ends.

    Port 0 (the default) takes a free port. `options` are more `uvicorn.Config` arguments (such
    as `service.api.server_limits.uvicorn_config`'s, less its host and port)."""

    def __init__(
        self,
        app: Any,
        *,
        port: int = 0,
        lifespan: str = "auto",
        graceful_timeout_s: float = 1.0,
        **options: Any,
    ) -> None:
        defaults: dict[str, Any] = {
            "lifespan": lifespan,
            "log_level": "warning",
            "access_log": False,
            # A request a test left hanging must not hold the shutdown forever.
            "timeout_graceful_shutdown": graceful_timeout_s,
        }
        config = uvicorn.Config(app, **{**defaults, **options})
        self._server = uvicorn.Server(config)
        # Bound now, listening from start(): until then connections to `origin` are refused,
        # which is how a test stages an upstream that comes up late.
        # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections
        # only then, and without it every keep-alive request waits out a 40 ms delayed ACK.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self.port: int = self._socket.getsockname()[1]
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve until stop(); a server starts once."""
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            daemon=True,
            name=f"uvicorn-{self.port}",
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"test server on port {self.port} failed to start")
            time.sleep(0.001)

    def stop(self) -> None:
        if self._thread is None:
            self._socket.close()
            return
        self._server.should_exit = True
        self._thread.join()
        self._thread = None

    def __enter__(self) -> ThreadedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
