"""The backend the settings name, for every consumer (the proxy, evaluation, bench/).

torch is imported only for the local backend, so the core install never needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.core.backend import Backend
from service.settings import BackendKind, Settings

if TYPE_CHECKING:
    from service.store.db import Database


def backend_from_settings(settings: Settings, db: Database | None = None) -> Backend:
    """Blocking (a local model loads for seconds): call it off the event loop. `db`: the
    registry a local engine follows for its active adapter."""
    if settings.serving.backend is BackendKind.LOCAL:
        from service.backends.local.backend import LocalBackend

        return LocalBackend.from_settings(settings, db)
    from service.backends.upstream import UpstreamBackend

    return UpstreamBackend.from_settings(settings)
