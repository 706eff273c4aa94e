"""Adapter registry operations for operators: list, activate, roll back.

Activation goes through the trainer's publisher: in front of an upstream (vLLM) the version is
loaded there and checked before the registry marks it active; with the embedded engine the
registry change is the activation. Either way the serving side re-reads the registry at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from service.api.adapters.protocol import AdapterVersionOut
from service.errors import APIError
from service.served_models import ModelNames
from service.settings import BackendKind, Settings
from service.store.db import Database
from service.store.models import AdapterVersion
from trainer.publish import PublishError, make_publisher
from trainer.registry import (
    RegistryError,
    UnknownVersion,
    get_version,
    list_versions,
    rollback_target,
)


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
    def __init__(self, settings: Settings, db: Database, names: ModelNames) -> None:
        self._settings = settings
        self._db = db
        self._names = names

    async def activate(self, name: str) -> AdapterVersionOut:
        return await self._activate(lambda: get_version(self._db, name))

    async def rollback(self) -> AdapterVersionOut:
        return await self._activate(lambda: rollback_target(self._db))

    async def _activate(self, choose: Callable[[], Awaitable[AdapterVersion]]) -> AdapterVersionOut:
        behind_upstream = self._settings.backend is BackendKind.UPSTREAM
        key = self._settings.upstream_api_key
        publisher = make_publisher(
            self._settings.upstream_url if behind_upstream else None,
            api_key=key.get_secret_value() if key is not None else None,
            timeout_s=self._settings.upstream_timeout_s,
        )
        try:
            active = await publisher.activate(self._db, await choose())
        except UnknownVersion as exc:
            raise APIError(404, str(exc), error_type="not_found_error", code="adapter_not_found") from exc
        except RegistryError as exc:
            raise APIError(409, str(exc), code="adapter_conflict") from exc
        except PublishError as exc:
            raise APIError(502, str(exc), error_type="upstream_error", code="adapter_publish_failed") from exc
        await self._names.refresh()
        [described] = [v for v in await list_adapters(self._db) if v.name == active.name]
        return described
