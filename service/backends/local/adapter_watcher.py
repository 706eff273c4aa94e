"""Follow the adapter registry (`adapter_versions`) and keep the engine's active adapter equal to it.

The trainer writes the adapter directory and flips a row to `active`; this watcher notices on its
next poll (or at once through `refresh`) and hot-loads it. A version that fails to load is logged
and skipped until the registry names another one; the previous adapter stays in service.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.adapters.registry import active_adapter
from service.backends.local.engine import Engine
from service.polling import Poller
from service.store.models import AdapterVersion

log = logging.getLogger("conscience.local.registry")


class HasSessions(Protocol):
    """What the watcher needs of service.store.db.Database."""

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]: ...


class AdapterWatcher:
    def __init__(self, engine: Engine, db: HasSessions, *, poll_s: float) -> None:
        self._engine = engine
        self._db = db
        self._failed: set[str] = set()
        self._refresh_lock = asyncio.Lock()
        self._poller = Poller(self._refresh_logged, poll_s, "conscience-adapter-watcher")

    def start(self) -> None:
        """Follow the registry from now on (the backend's start-up did the first refresh)."""
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()

    async def refresh(self) -> None:
        """Read the registry now and load, swap or drop the adapter to match it."""
        async with self._refresh_lock:
            row = await self._active_row()
            if row is None:
                if self._engine.active_adapter_name is not None:
                    await self._engine.deactivate_adapter()
                return
            name, path, version_id = row.name, row.path, row.id
            if name == self._engine.active_adapter_name or version_id in self._failed:
                return
            if row.base_model != self._engine.served_base_name:
                log.warning(
                    "adapter %s was trained on %r; serving it on %r",
                    name, row.base_model, self._engine.served_base_name,
                )
            try:
                await self._engine.activate_adapter(name, path)
            except Exception:
                self._failed.add(version_id)
                log.exception("adapter %s at %s could not be loaded; keeping the current one", name, path)

    async def _active_row(self) -> AdapterVersion | None:
        async with self._db.sessions() as session:
            return await active_adapter(session)

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except Exception:  # a database outage must not end the watching
            log.warning("adapter registry poll failed", exc_info=True)
