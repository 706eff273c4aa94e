"""Typed doors to what `service/app.py`'s lifespan hangs on `app.state` (as vLLM's
`def chat(request) -> OpenAIServingChat`): a route asks for what it needs by name and type,
so an editor can follow it from the route to the object and back to where it is made."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from service.api.adapters.serving import AdapterActivation
    from service.api.check.serving import ConscienceChecks
    from service.api.checked_serving import CheckedServing
    from service.core.backend import Backend
    from service.metrics import Metrics
    from service.store.db import Database
    from service.store.writer import RecordWriter


def chat_serving(request: Request) -> CheckedServing:
    return request.app.state.chat_serving


def completion_serving(request: Request) -> CheckedServing:
    return request.app.state.completion_serving


def conscience_checks(request: Request) -> ConscienceChecks:
    return request.app.state.conscience_checks


def backend(request: Request) -> Backend:
    return request.app.state.backend


def database(request: Request) -> Database:
    return request.app.state.db


def record_writer(request: Request) -> RecordWriter:
    return request.app.state.writer


def metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def adapter_activation(request: Request) -> AdapterActivation:
    return request.app.state.adapter_activation
