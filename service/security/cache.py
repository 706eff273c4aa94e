"""The client keys, held in memory so that authenticating a request never touches the database.

The cache reloads the `api_keys` table every `refresh_s` seconds, so keys created or revoked with
the CLI take effect within that time. While the database is down the last loaded keys stay in
force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from service.security.keys import hash_key
from service.store import repository
from service.store.db import Database

log = logging.getLogger("conscience.security.keys")


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """Who is calling: an API key's id and name, and the framework/mode it pins (if any)."""

    id: str
    name: str
    framework: str | None
    mode: str | None


class ApiKeyCache:
    def __init__(self, db: Database, refresh_s: float) -> None:
        self._db = db
        self._refresh_s = refresh_s
        self._by_hash: dict[str, ClientIdentity] = {}
        self._loaded = False
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def loaded(self) -> bool:
        """Whether the keys were read at least once (until then, nobody knows if any exist)."""
        return self._loaded

    @property
    def has_keys(self) -> bool:
        """Whether at least one key is active."""
        return bool(self._by_hash)

    def lookup(self, plaintext: str) -> ClientIdentity | None:
        return self._by_hash.get(hash_key(plaintext))

    async def refresh(self) -> None:
        """Reload the active keys; raises if the database cannot be read."""
        async with self._db.sessions() as session:
            rows = await repository.active_api_keys(session)
        self._by_hash = {
            row.key_hash: ClientIdentity(row.id, row.name, row.framework, row.mode) for row in rows
        }
        self._loaded = True

    async def start(self) -> None:
        """First load (a failure is logged, not raised), then reload in the background."""
        await self._refresh_logged()
        self._task = asyncio.create_task(self._refresh_forever(), name="api-key-refresh")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            await self._refresh_logged()

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:
            if not self._failing:
                log.warning(
                    "could not load API keys (%s); keeping the last ones", type(exc).__name__
                )
            self._failing = True
            return
        if self._failing:
            log.info("API keys loaded again")
        self._failing = False
