"""The client keys, held in memory so that authenticating a request never touches the database.

The cache reloads the `api_keys` table every `refresh_s` seconds, so keys created or revoked with
the CLI take effect within that time. While the database is down the last loaded keys stay in
force. After every reload attempt it calls `on_refresh` (the open-proxy alarm).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from service.polling import Poller
from service.store import credentials
from service.store.db import Database
from service.store.keys import hash_key

log = logging.getLogger("conscience.security.keys")


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """Who is calling: an API key's id and name, and the framework/mode it pins (if any)."""

    id: str
    name: str
    framework: str | None
    mode: str | None


class ApiKeyCache:
    def __init__(
        self,
        db: Database,
        refresh_s: float,
        on_refresh: Callable[[ApiKeyCache], None] | None = None,
    ) -> None:
        self._db = db
        self._on_refresh = on_refresh
        self._by_hash: dict[str, ClientIdentity] = {}
        self._issued = False
        self._loaded = False
        self._failing = False
        self._poller = Poller(self._refresh_logged, refresh_s, "api-key-refresh")

    @property
    def loaded(self) -> bool:
        """Whether the keys were read at least once (until then, nobody knows if any exist)."""
        return self._loaded

    @property
    def has_keys(self) -> bool:
        """Whether at least one key is active."""
        return bool(self._by_hash)

    @property
    def issued(self) -> bool:
        """Whether any key, active or revoked, exists: revoking the last one must not reopen
        the proxy to anonymous callers."""
        return self._issued

    def lookup(self, plaintext: str) -> ClientIdentity | None:
        return self._by_hash.get(hash_key(plaintext))

    async def refresh(self) -> None:
        """Reload the keys; raises if the database cannot be read."""
        async with self._db.sessions() as session:
            rows = await credentials.list_api_keys(session)
        self._by_hash = {
            row.key_hash: ClientIdentity(row.id, row.name, row.framework, row.mode)
            for row in rows
            if row.revoked_at is None
        }
        self._issued = bool(rows)
        self._loaded = True

    async def start(self) -> None:
        """First load (a failure is logged, not raised), then reload in the background."""
        await self._refresh_logged()
        self._poller.start()

    async def aclose(self) -> None:
        await self._poller.stop()

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:
            if not self._failing:
                log.warning(
                    "could not load API keys (%s); keeping the last ones", type(exc).__name__
                )
            self._failing = True
        else:
            if self._failing:
                log.info("API keys loaded again")
            self._failing = False
        if self._on_refresh is not None:
            self._on_refresh(self)
