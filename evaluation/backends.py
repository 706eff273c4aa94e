"""The backends and model names an evaluation uses: the proxy's own (service/backends/factory.py,
service/adapters/served_models.py), built from the same settings, so it measures what the proxy runs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from evaluation.settings import EvaluationSettings
from service.adapters.served_models import model_names
from service.backends.factory import backend_from_settings
from service.backends.upstream import UpstreamBackend
from service.core.backend import Backend
from service.settings import Settings


class EvaluationSetupError(ValueError):
    """The settings do not say which model to evaluate or judge with."""


async def open_backend(settings: Settings) -> Backend:
    """The configured backend; a local model is loaded off the event loop (seconds)."""
    backend = await asyncio.to_thread(backend_from_settings, settings)
    await backend.start()
    return backend


@dataclass(frozen=True, slots=True)
class EvaluatedModels:
    """The two names of one evaluation run, fixed for its length."""

    policy: str
    judge: str


async def evaluated_models(settings: Settings, backend: Backend) -> EvaluatedModels:
    """As the proxy names them (no registry: an evaluation names its policy itself): the
    frozen base judges; the policy is the configured model, else the judge's."""
    names = model_names(settings, backend, db=None)
    await names.start()
    try:
        judge, policy = names.judge, names.policy
    finally:
        await names.aclose()
    if judge is None:
        raise EvaluationSetupError(
            "with an upstream backend, name the judge model: --judge-model or --model "
            "(CONSCIENCE_JUDGE_MODEL / CONSCIENCE_MODEL), or serve one base model upstream"
        )
    return EvaluatedModels(policy=policy or judge, judge=judge)


def rating_judge_backend(
    settings: EvaluationSettings, backend: Backend, names: EvaluatedModels
) -> tuple[Backend, str, bool]:
    """(backend, model, whether the caller must close it) of the misalignment judge."""
    if settings.evaluation.judge_url is None:
        return backend, settings.evaluation.judge_model or names.judge, False
    if settings.evaluation.judge_model is None:
        raise EvaluationSetupError("--eval-judge-url needs --eval-judge-model")
    judge = UpstreamBackend.from_settings(
        settings, url=settings.evaluation.judge_url, api_key=settings.evaluation.judge_api_key
    )
    return judge, settings.evaluation.judge_model, True
