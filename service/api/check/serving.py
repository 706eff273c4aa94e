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
from service.api.refusals import refusal_error
from service.conscience.judge import UNETHICAL
from service.conscience.outcome import UNCHECKED, Review
from service.conscience.pipeline import Case, CheckContext, ConsciencePipeline
from service.conscience.planning import Asked, RequestPlanner
from service.conscience.policy import PolicyRefusal
from service.frameworks import Framework
from service.logs import client_request_id_var
from service.metrics import Metrics
from service.security.cache import ClientIdentity
from service.settings import FailurePolicy, JudgeStyle


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
        self, pipeline: ConsciencePipeline, planner: RequestPlanner, models: ModelNames, metrics: Metrics
    ) -> None:
        self._pipeline = pipeline
        self._planner = planner
        self._models = models
        self._metrics = metrics

    async def check(self, call: CheckCall, caller: ClientIdentity | None, request_id: str) -> CheckedAnswers:
        """Judge every answer of `call` concurrently (repairing flagged ones when it asks), record
        them, and return the reviews in order. APIError: 400 too many answers or an unknown
        framework, 403 a choice the policy refuses, 429 no room for the reviews, 503 no judge."""
        try:
            plan = self._planner.plan_check(
                len(call.cases), Asked(call.framework, judge_style=call.judge_style), caller,
                endpoint=call.endpoint, repair=call.repair,
                policy_model=call.policy_model or self._models.policy or "unknown", judge_model=self._models.judge,
                request_id=request_id, client_request_id=client_request_id_var.get(),
                answers_param="input" if call.endpoint == "moderations" else "choices",
            )
        except PolicyRefusal as refusal:
            raise refusal_error(refusal) from None
        started = time.perf_counter()
        try:
            with self._pipeline.request_scope(plan.context, len(call.cases)):
                reviews = await self._pipeline.check(plan.context, call.cases, upstream_ms=0.0, reserved=plan.reserved)
        finally:
            plan.reserved.release()
        self._metrics.stage_seconds.labels("total").observe(time.perf_counter() - started)
        return CheckedAnswers(plan.context, plan.framework, reviews)
