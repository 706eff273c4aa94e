"""`conscience serve --workers N`: uvicorn's worker processes, each a whole proxy of its own.

uvicorn starts workers with multiprocessing's spawn, so each one builds its app from an import
string: `worker_app` reads the settings the parent resolved (flags, environment, `.env`, the
local model) from one environment variable; secrets are left out of it and each worker reads
them the way the parent did (environment or `CONSCIENCE_<NAME>_FILE`). `serve` migrates the
database once before the workers start (they would race on it), so workers do not.

What one process holds is per worker and safe so: the record writer and its own spool file
(service/store/spool.py, `claim_slot`), the key cache, the model-name and adapter followers (they
poll the database), the console's sessions (self-contained signed tokens,
service/api/ui/session.py). On SIGTERM or SIGINT the supervisor passes SIGTERM to every worker
and waits for them; each gives its requests in flight `shutdown_grace_s` (the same config: uvicorn's
`timeout_graceful_shutdown`), ends and records the rest (service/shutdown.py), then drains its
writer (to the database, or its spool) in its lifespan's shutdown.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastapi import FastAPI

from service.settings import Settings

SETTINGS_VARIABLE = "CONSCIENCE_SERVE_WORKER_SETTINGS"
APP_FACTORY = "service.workers:worker_app"
PROTOCOL = "service.api.server_limits:HeadLimitedProtocol"


def export_settings(settings: Settings) -> None:
    """Hand `settings` to the worker processes (spawned children inherit the environment)."""
    secrets: dict[str, set[str]] = {}
    for path in settings.secret_paths():
        group, name = path.split(".", 1)
        secrets.setdefault(group, set()).add(name)
    # The parent read the --config file: its values are in here, and a worker must not read a
    # file that changed since.
    values = settings.model_dump(mode="json", exclude={"config": True, **secrets})
    values["store"]["auto_migrate"] = False  # done once, by the parent
    os.environ[SETTINGS_VARIABLE] = json.dumps(values)


def worker_settings() -> Settings:
    values: dict[str, Any] = json.loads(os.environ[SETTINGS_VARIABLE])
    return Settings(**values)


def worker_app() -> FastAPI:
    """uvicorn's app factory in each worker process."""
    from service.api.server_limits import HeadLimitedProtocol, protocol_bounds
    from service.app import create_app
    from service.logs import configure_logging

    settings = worker_settings()
    configure_logging(settings.serving.log_level)
    # uvicorn imports the protocol by name in each worker: its bounds are set here, per process.
    for name, value in protocol_bounds(settings).items():
        setattr(HeadLimitedProtocol, name, value)
    return create_app(settings)


def run_workers(settings: Settings, config: dict[str, Any]) -> None:
    """Start the workers; `serve` has migrated the database already (`migrate_before_serving`)."""
    import uvicorn

    export_settings(settings)
    uvicorn.run(APP_FACTORY, factory=True, workers=settings.serving.workers, **{**config, "http": PROTOCOL})
