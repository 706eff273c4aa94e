"""`AdapterVersions`: the one door through which an operator lists, activates and rolls back.

`conscience adapters …` and `POST /admin/adapters/…` (and the console) both call this class,
so they can do the same things with the same options (`PublishOptions`): the version is
chosen from the registry, published (behind vLLM: loaded there and checked first), and then
whoever follows the registry in this process is told at once (`on_change`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from service.adapters.publish import PublishOptions, make_publisher
from service.adapters.registry import get_version, list_versions, rollback_target
from service.store.db import Database
from service.store.models import AdapterVersion


async def _nothing_follows() -> None:
    """No in-process follower (the CLI): serving processes poll the registry."""


class AdapterVersions:
    def __init__(
        self,
        db: Database,
        options: PublishOptions,
        on_change: Callable[[], Awaitable[None]] = _nothing_follows,
    ) -> None:
        self._db = db
        self._publisher = make_publisher(options)
        self._on_change = on_change

    async def list(self) -> list[AdapterVersion]:
        """Every version, newest first."""
        return await list_versions(self._db)

    async def activate(self, name: str) -> AdapterVersion:
        """Make `name` the active version. Raises UnknownVersion, RegistryError, PublishError."""
        return await self._publish(await get_version(self._db, name))

    async def rollback(self) -> AdapterVersion:
        """Re-activate the version the active one was trained from."""
        return await self._publish(await rollback_target(self._db))

    async def _publish(self, version: AdapterVersion) -> AdapterVersion:
        active = await self._publisher.activate(self._db, version)
        await self._on_change()
        return active
