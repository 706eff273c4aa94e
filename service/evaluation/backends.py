"""The backends an evaluation talks to, built from the same settings as the proxy's."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from service.backends.base import Backend, SelfNamingBackend
from service.backends.upstream import UpstreamBackend
from service.settings import BackendKind, Settings


class EvaluationSetupError(ValueError):
    """The settings do not say which model to evaluate or judge with."""


async def open_backend(settings: Settings) -> Backend:
    """The configured backend; a local model is loaded off the event loop (seconds)."""
    if settings.backend is BackendKind.LOCAL:
        from service.backends.local.backend import LocalBackend

        backend: Backend = await asyncio.to_thread(LocalBackend.from_settings, settings)
    else:
        backend = UpstreamBackend.from_settings(settings)
    await backend.start()
    return backend


@dataclass(frozen=True, slots=True)
class ModelNames:
    policy: str
    judge: str


def model_names(settings: Settings, backend: Backend) -> ModelNames:
    """As the proxy names them: the frozen base judges; the policy is the configured model (an
    in-process backend: its active adapter, else its base)."""
    if isinstance(backend, SelfNamingBackend):
        base = backend.served_base_name
        return ModelNames(
            policy=settings.model or backend.active_adapter_name or base,
            judge=settings.judge_model or base,
        )
    judge = settings.judge_model or settings.model
    if judge is None:
        raise EvaluationSetupError(
            "with an upstream backend, name the judge model: --judge-model or --model "
            "(CONSCIENCE_JUDGE_MODEL / CONSCIENCE_MODEL)"
        )
    return ModelNames(policy=settings.model or judge, judge=judge)


def rating_judge_backend(settings: Settings, backend: Backend, names: ModelNames) -> tuple[Backend, str, bool]:
    """(backend, model, whether the caller must close it) of the misalignment judge."""
    if settings.eval_judge_url is None:
        return backend, settings.eval_judge_model or names.judge, False
    if settings.eval_judge_model is None:
        raise EvaluationSetupError("--eval-judge-url needs --eval-judge-model")
    key = settings.eval_judge_api_key
    judge = UpstreamBackend(
        settings.eval_judge_url,
        api_key=key.get_secret_value() if key is not None else None,
        timeout_s=settings.upstream_timeout_s,
        connect_timeout_s=settings.upstream_connect_timeout_s,
        connect_retries=settings.upstream_connect_retries,
    )
    return judge, settings.eval_judge_model, True
