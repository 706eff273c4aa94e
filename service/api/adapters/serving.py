"""The HTTP door of the adapter owner (service/adapters/versions.py): list, activate, roll back.

`AdapterVersions` does the work, with the proxy's publish options (its upstream, the adapters
directory as vLLM sees it, how many versions stay loaded), the same ones `conscience adapters`
takes as flags; this module maps its errors to API errors and its rows to wire types.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from service.adapters.publish import PublishError
from service.adapters.registry import RegistryError, UnknownVersion, list_versions
from service.adapters.versions import AdapterVersions
from service.api.adapters.protocol import AdapterVersionOut
from service.errors import APIError
from service.store.db import Database
from service.store.models import AdapterVersion


def describe(versions: Sequence[AdapterVersion]) -> list[AdapterVersionOut]:
    names = {version.id: version.name for version in versions}
    return [
        AdapterVersionOut.model_validate(version).model_copy(
            update={"parent": names.get(version.parent_id) if version.parent_id else None}
        )
        for version in versions
    ]


async def list_adapters(db: Database) -> list[AdapterVersionOut]:
    return describe(await list_versions(db))


class AdapterActivation:
    def __init__(self, versions: AdapterVersions) -> None:
        self._versions = versions

    async def activate(self, name: str) -> AdapterVersionOut:
        return await self._answer(lambda: self._versions.activate(name))

    async def rollback(self) -> AdapterVersionOut:
        return await self._answer(self._versions.rollback)

    async def _answer(self, change: Callable[[], Awaitable[AdapterVersion]]) -> AdapterVersionOut:
        try:
            active = await change()
        except UnknownVersion as exc:
            raise APIError(404, str(exc), error_type="not_found_error", code="adapter_not_found") from exc
        except RegistryError as exc:
            raise APIError(409, str(exc), code="adapter_conflict") from exc
        except PublishError as exc:
            raise APIError(502, str(exc), error_type="upstream_error", code="adapter_publish_failed") from exc
        [described] = [v for v in describe(await self._versions.list()) if v.name == active.name]
        return described
