"""The FastAPI app: wires settings → backend → conscience pipeline → store, and the routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.adapters.publish import PublishOptions
from service.adapters.served_models import ModelCatalog, model_names
from service.adapters.versions import AdapterVersions
from service.api.adapters.api_router import router as adapters_router
from service.api.adapters.serving import AdapterActivation
from service.api.admin.api_router import router as admin_router
from service.api.chat_completion.api_router import router as chat_router
from service.api.chat_completion.serving import ChatSurface
from service.api.check.api_router import router as check_router
from service.api.check.serving import ConscienceChecks
from service.api.checked_serving import CheckedServing
from service.api.completion.api_router import router as completion_router
from service.api.completion.serving import CompletionSurface
from service.api.embeddings.api_router import router as embeddings_router
from service.api.health.api_router import router as health_router
from service.api.middleware import RequestContextMiddleware
from service.api.models.api_router import router as models_router
from service.api.moderations.api_router import router as moderations_router
from service.api.responses.api_router import router as responses_router
from service.api.ui.api_router import router as ui_router
from service.backends.factory import backend_from_settings
from service.conscience.planning import RequestPlanner
from service.conscience.policy import JudgeStyleError, JudgeStyles
from service.conscience.probe import ProbeError
from service.conscience.stack import build_pipeline
from service.conscience.thresholds import ThresholdsError
from service.core.backend import Backend
from service.errors import install_error_handlers
from service.frameworks import load_frameworks
from service.metrics import Metrics
from service.security.auth import OpenAccessAlarm
from service.security.cache import ApiKeyCache
from service.settings import Settings
from service.shutdown import STATE_KEY, GracefulShutdown
from service.startup import StartupError, install_startup_failure_line, migrate
from service.store.db import Database
from service.store.writer import RecordWriter
from service.tracing import TracingMiddleware, configure_from_environment

log = logging.getLogger("conscience.app")

BackendFactory = Callable[[Settings, Database], Backend]


def default_backend(settings: Settings, db: Database) -> Backend:
    return backend_from_settings(settings, db)


def create_app(settings: Settings, backend_factory: BackendFactory = default_backend) -> FastAPI:
    install_startup_failure_line()
    tracing_on = configure_from_environment()  # OTEL_TRACES_EXPORTER; off: nothing wrapped
    metrics = Metrics()
    frameworks = load_frameworks(settings.policy.frameworks_dir)  # Settings checked the default is one
    shutdown = GracefulShutdown(settings.serving.shutdown_grace_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, GracefulShutdown]]:
        if settings.store.auto_migrate:  # `serve` migrated already; an app built another way does it here
            await asyncio.to_thread(migrate, settings.store.db_url)
        db = Database(
            settings.store.db_url,
            connect_timeout_s=settings.store.db_connect_timeout_s,
            command_timeout_s=settings.store.db_command_timeout_s,
        )
        writer = RecordWriter(
            db,
            settings.store.spool_path,
            batch_size=settings.store.writer_batch_size,
            flush_interval_s=settings.store.writer_flush_interval_s,
            retry_interval_s=settings.store.writer_retry_interval_s,
            queue_size=settings.store.writer_queue_size,
            max_hold_s=settings.store.writer_max_hold_s,
            shutdown_timeout_s=settings.store.writer_shutdown_timeout_s,
        )
        await writer.start()
        metrics.track_writer(writer)
        keys = ApiKeyCache(db, settings.security.api_key_refresh_s, on_refresh=OpenAccessAlarm(settings))
        await keys.start()
        try:
            backend = await asyncio.to_thread(backend_factory, settings, db)
            judge_styles = JudgeStyles.serving(settings, getattr(backend, "probe", None))  # a probe: latent
            pipeline = build_pipeline(settings, backend, writer, metrics, shutdown)
        except (ProbeError, ThresholdsError, JudgeStyleError, StartupError) as exc:  # one line: StartupFailureLine
            await writer.aclose()
            await keys.aclose()
            await db.dispose()
            raise (exc if isinstance(exc, StartupError) else StartupError(str(exc))) from None
        names = model_names(settings, backend, db)
        state = app.state
        state.adapter_activation = AdapterActivation(
            AdapterVersions(db, PublishOptions.from_settings(settings), on_change=names.refresh)
        )
        state.settings, state.db, state.writer, state.keys = settings, db, writer, keys
        state.backend, state.pipeline, state.metrics = backend, pipeline, metrics
        # Read through the typed doors of service/api/state.py.
        catalog = ModelCatalog(backend, aliases=settings.serving.model_alias_map, max_age_s=settings.adapters.poll_s)
        planner = RequestPlanner(settings, frameworks, pipeline, judge_styles)  # one for every surface
        state.chat_serving = CheckedServing(
            ChatSurface(), backend, pipeline, planner, settings, names, catalog, metrics
        )
        state.completion_serving = CheckedServing(
            CompletionSurface(), backend, pipeline, planner, settings, names, catalog, metrics
        )
        state.conscience_checks = ConscienceChecks(pipeline, planner, names, metrics)
        await backend.start()
        await names.start()
        log.info(
            "conscience ready: backend %s, framework %s, mode %s",
            settings.serving.backend.value, settings.policy.framework, settings.policy.mode.value,
        )
        try:
            yield {STATE_KEY: shutdown}  # uvicorn's protocol starts its clock (server_limits.py)
        finally:
            # By now uvicorn has waited out the grace and cancelled what still ran: those
            # requests write their records as they unwind, and monitor-mode reviews get what is
            # left of the grace, before the writer drains.
            shutdown.begin()
            await shutdown.settle()
            await pipeline.drain(shutdown.remaining_s())
            await names.aclose()
            await writer.aclose()
            await keys.aclose()
            await backend.aclose()
            await db.dispose()

    app = FastAPI(
        title="Conscience",
        version="0.1.0",
        description="An OpenAI-compatible proxy that judges every completion against an ethical "
        "framework with a frozen copy of the model, repairs unethical answers, and logs the "
        "(prompt, rejected, chosen) triples for DPO training.",
        lifespan=lifespan,
        # The schema itself stays available to `app.openapi()` (`conscience openapi`).
        **({} if settings.docs_served else {"docs_url": None, "redoc_url": None, "openapi_url": None}),
        # A JSON body without a Content-Type is parsed, as `vllm serve` parses it
        # (curl -d sends none); a body declared as something else gets a 415 (service/errors.py).
        strict_content_type=False,
    )
    install_error_handlers(app)
    routers = (chat_router, responses_router, completion_router, moderations_router, check_router, models_router,
               embeddings_router, health_router, admin_router, adapters_router, ui_router)
    for router in routers:
        app.include_router(router)
    app.add_middleware(
        RequestContextMiddleware, max_body_bytes=settings.limits.max_body_bytes, metrics=metrics, shutdown=shutdown
    )
    if tracing_on:
        app.add_middleware(TracingMiddleware)  # outermost: the request's span holds the rest
    return app
