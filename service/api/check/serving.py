"""The conscience as a service: judge (and, when asked, repair) answers a gateway already has.

Shared by POST /v1/conscience/check and POST /v1/moderations. A call is planned as the proxy
plans a request — the framework and judge style under the caller's key and the operator's
policy, the judge model, review slots admitted before any work (429 without room) — and runs
through `ConsciencePipeline.check`, so every answer is recorded as a check (endpoint `check` or
`moderations`) and every repair as a training triple, exactly as on the proxy path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from service.adapters.served_models import ModelNames
from service.conscience.frameworks import Framework
from service.conscience.judge import UNETHICAL
from service.conscience.outcome import UNCHECKED, Review
from service.conscience.pipeline import Case, CheckContext, ConsciencePipeline
from service.conscience.policy import (
    PolicyRefusal,
    judge_model_or_refuse,
    request_framework,
    request_judge_style,
)
from service.conscience.review import ReviewPolicy
from service.conscience.usage import begin as begin_usage
from service.errors import APIError
from service.logs import client_request_id_var
from service.metrics import Metrics
from service.security.cache import ClientIdentity
from service.settings import FailurePolicy, JudgeStyle, Mode, Settings

_REFUSAL_STATUS = {
    "framework_not_allowed": (403, "permission_error"),
    "judge_style_not_allowed": (403, "permission_error"),
    "judge_model_unknown": (503, "api_error"),
}


@dataclass(frozen=True, slots=True)
class CheckCall:
    """One call's answers and how to judge them."""

    endpoint: Literal["check", "moderations"]
    cases: list[Case]
    repair: bool
    framework: str | None = None  # asked for (None: the key's or the server's)
    judge_style: JudgeStyle | None = None
    policy_model: str | None = None  # the model that wrote the answers (None: the served one)


@dataclass(frozen=True, slots=True)
class CheckedAnswers:
    context: CheckContext
    framework: Framework
    reviews: list[Review]

    def flagged(self, review: Review) -> bool:
        """Not to be sent as it is: unethical, or not judged where the operator fails closed."""
        if review.verdict == UNETHICAL:
            return True
        return review.verdict == UNCHECKED and self.context.policy.failure_policy is FailurePolicy.FAIL_CLOSED


class ConscienceChecks:
    def __init__(
        self, pipeline: ConsciencePipeline, frameworks: dict[str, Framework], settings: Settings,
        models: ModelNames, metrics: Metrics,
    ) -> None:
        self._pipeline = pipeline
        self._frameworks = frameworks
        self._settings = settings
        self._models = models
        self._metrics = metrics

    async def check(self, call: CheckCall, caller: ClientIdentity | None, request_id: str) -> CheckedAnswers:
        """Judge every answer of `call` concurrently (repairing flagged ones when it asks), record
        them, and return the reviews in order. APIError: 400 too many answers or an unknown
        framework, 403 a choice the policy refuses, 429 no room for the reviews, 503 no judge."""
        if len(call.cases) > self._settings.limits.max_n:
            raise APIError(
                400, f"{len(call.cases)} answers; at most {self._settings.limits.max_n} per request on this server.",
                param="input" if call.endpoint == "moderations" else "choices",
            )
        try:
            context, framework = self._planned(call, caller, request_id)
        except PolicyRefusal as refusal:
            status, error_type = _REFUSAL_STATUS[refusal.code]
            raise APIError(
                status, refusal.message, error_type=error_type, param=refusal.param, code=refusal.code
            ) from None
        reserved = self._pipeline.admit(Mode.ENFORCE, len(call.cases))  # the caller waits: running slots
        begin_usage(framework.name, self._metrics.stage_tokens)
        started = time.perf_counter()
        try:
            with self._pipeline.until_recorded(context, len(call.cases)):
                reviews = await self._pipeline.check(context, call.cases, upstream_ms=0.0, reserved=reserved)
        finally:
            reserved.release()
        self._metrics.stage_seconds.labels("total").observe(time.perf_counter() - started)
        return CheckedAnswers(context, framework, reviews)

    def _planned(
        self, call: CheckCall, caller: ClientIdentity | None, request_id: str
    ) -> tuple[CheckContext, Framework]:
        name = request_framework(call.framework, caller.framework if caller else None, self._settings)
        framework = self._frameworks.get(name)
        if framework is None:
            raise APIError(
                400,
                f"Unknown conscience framework {name!r}; available: {', '.join(sorted(self._frameworks))}.",
                param="conscience.framework",
            )
        policy = ReviewPolicy(
            framework=framework,
            style=request_judge_style(call.judge_style, self._settings),
            # Without a repair asked for, a flagged answer is only reported (no repair is drafted).
            max_repairs=self._settings.repair.max_attempts if call.repair else 0,
            failure_policy=self._settings.policy.failure_policy,
            judge_model=judge_model_or_refuse(self._models.judge),
        )
        context = CheckContext(
            request_id=request_id,
            endpoint=call.endpoint,
            # As recorded: a repair replaces the answer (enforce); a verdict alone reports it (monitor).
            mode=Mode.ENFORCE if call.repair else Mode.MONITOR,
            policy=policy,
            policy_model=call.policy_model or self._models.policy or "unknown",
            api_key_id=caller.id if caller else None,
            client_request_id=client_request_id_var.get(),
        )
        return context, framework
