"""A loopback TCP forwarder that can be switched off or black-holed: real network failures for
PostgreSQL.

`stop` is a dead network (connections refused and cut). `blackhole` is a hung server: new
connections are accepted and existing ones stay open, but nothing is forwarded either way, so
only the client's own timeouts end a wait.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.blackholed = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen (again, on the same port once one was chosen)."""
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse new connections and cut every open one, as a dead network would."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    def blackhole(self) -> None:
        """From now on swallow every byte, in both directions, on old and new connections."""
        self.blackholed = True

    async def _forward(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        writers = {client_writer}
        self._writers.add(client_writer)
        try:
            if self.blackholed:
                await self._pipe(client_reader, None)
                return
            try:
                server_reader, server_writer = await asyncio.open_connection(*self.target)
            except OSError:
                return
            writers.add(server_writer)
            self._writers.add(server_writer)
            await asyncio.gather(
                self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer)
            )
        finally:
            for writer in writers:
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None
    ) -> None:
        """Copy until either side closes; a black-holed proxy reads on and drops the bytes."""
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if writer is not None and not self.blackholed:
                    writer.write(data)
                    await writer.drain()
        if writer is not None:
            writer.transport.abort()
