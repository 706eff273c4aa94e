"""Serving logic shared by the checked surfaces (chat, legacy completions, and the Responses API
over chat): it returns data — a completion, or its chunks — that each surface frames (JSON,
SSE, Responses events: service/api/framing.py, service/api/responses/).

A `Surface` (service/api/checked_plan.py) knows where a surface keeps its text; the conscience
plans the request in one call (service/conscience/planning.py: framework, mode, judge style and
model, limits, and the route: windowed or buffered; its typed refusals mapped to status codes by
service/api/refusals.py), and the route the plan names answers it:
- off and monitor: pass through (service/api/pass_through.py), monitor reviewing in the background;
- enforce: review first, a flagged choice replaced by its repair (or a refusal) — judged whole
  (service/api/buffered_enforcement.py: a completion, or a stream with tools, logprobs, a batch…)
  or window by window (service/api/windowed_stream.py).
Except in mode off, a choice reaches the client only with what the judge reads
(`Surface.forwarded`).
"""

from __future__ import annotations

from service.adapters.served_models import ModelCatalog, ModelNames
from service.api.buffered_enforcement import EnforcedBufferedStream, EnforcedCompletion
from service.api.checked_plan import CheckedAnswer, CheckedStream, Plan, Route, Surface
from service.api.conscience_protocol import SamplingFields
from service.api.pass_through import PassThroughCompletion, PassThroughStream
from service.api.refusals import refusal_error
from service.api.windowed_stream import WindowedEnforcement
from service.conscience.pipeline import ConsciencePipeline
from service.conscience.planning import OUTPUT_BUDGETS, Asked, Endpoint, RequestPlanner, RouteName
from service.conscience.policy import PolicyRefusal
from service.core.backend import Backend
from service.errors import APIError
from service.logs import client_request_id_var
from service.metrics import Metrics
from service.security.cache import ClientIdentity
from service.settings import Settings


class CheckedServing:
    def __init__(
        self,
        surface: Surface,
        backend: Backend,
        pipeline: ConsciencePipeline,
        planner: RequestPlanner,
        settings: Settings,
        models: ModelNames,
        catalog: ModelCatalog,
        metrics: Metrics,
    ) -> None:
        self._surface = surface
        self._pipeline = pipeline
        self._planner = planner
        self._models = models
        self._catalog = catalog
        buffered = EnforcedBufferedStream(surface, backend, pipeline, metrics)
        self._routes: dict[RouteName, Route] = {
            "pass_through": PassThroughCompletion(surface, backend, pipeline, metrics),
            "pass_through_stream": PassThroughStream(surface, backend, pipeline, metrics),
            "enforced": EnforcedCompletion(surface, backend, pipeline, metrics),
            "enforced_stream": buffered,
            "windowed_stream": WindowedEnforcement(
                surface, backend, pipeline, metrics, buffered=buffered,
                window_chars=settings.policy.stream_window_chars,
                judge_context_chars=settings.policy.stream_judge_context_chars,
            ),
        }

    async def create(
        self, request: SamplingFields, caller: ClientIdentity | None, request_id: str, *,
        endpoint: Endpoint | None = None,
    ) -> CheckedAnswer | CheckedStream:
        """The checked answer as data, for the surface to frame: a completion, or (`stream`)
        its chunks. `caller`: the client's API key (None: keys are not required and none was
        sent); `endpoint`: what the records name (default: the surface's own)."""
        plan = await self._plan(request, caller, request_id, endpoint or self._surface.endpoint)
        # Until its records are written (a stream's: once it has ended, in its own generator).
        with self._pipeline.request_scope(plan.context, plan.body.get("n", 1)):
            route = self._routes[plan.route]
            try:
                answer = await route.respond(plan)
            except BaseException:
                plan.reserved.release()  # no review will use the slots
                raise
            if isinstance(answer, CheckedAnswer):
                plan.reserved.release()  # a no-op once the review has released or taken them
            return answer  # a stream gives its review slots back as it ends

    async def _plan(
        self, request: SamplingFields, caller: ClientIdentity | None, request_id: str, endpoint: Endpoint
    ) -> Plan:
        """The served model's name (404 for one not served), then the conscience's plan; the
        model's context length is looked up only for a request that bounds its answer."""
        policy_model = await self._catalog.serve(self._models, request.model)
        if policy_model is None:
            raise APIError(400, "you must provide a model parameter", param="model")
        bounded = any(getattr(request, param, None) is not None for param in OUTPUT_BUDGETS)
        context_len = await self._catalog.context_len(policy_model) if bounded else None
        body = request.model_dump(exclude={"conscience"}, exclude_unset=True)
        body["model"] = policy_model
        options = request.conscience
        asked = Asked(options.framework, options.mode, options.judge_style) if options else Asked()
        try:
            return self._planner.plan(
                self._surface, body, asked, caller, endpoint=endpoint, judge_model=self._models.judge,
                request_id=request_id, client_request_id=client_request_id_var.get(), context_len=context_len,
            )
        except PolicyRefusal as refusal:
            raise refusal_error(refusal) from None
