"""Serving logic shared by the checked surfaces (chat, legacy completions, and the Responses API
over chat): it returns data — a completion, or its chunks — that each surface frames (JSON,
SSE, Responses events: service/api/framing.py, service/api/responses/).

A `Surface` (service/api/checked_plan.py) knows where a surface keeps its text; the conscience
plans the request in one call (service/conscience/planning.py: framework, mode, judge style and
model, limits, windowed or buffered; its typed refusals mapped to status codes by
service/api/refusals.py), and this module runs the modes:
- off: pass through;
- monitor: answer at once, review in the background;
- enforce: review first; a flagged choice is replaced by its repair (or a refusal).
Streams in enforce mode take one path (service/api/enforced_stream.py): every choice through
its enforcement, window by window, or in one unbounded window (buffered: tools, logprobs, a
batch…) and then replayed; in the other modes they pass through, holding back one chunk so the
last one can carry the `conscience` object. Except
in mode off, a choice reaches the client only with what the judge reads (`Surface.forwarded`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from service.adapters.served_models import ModelCatalog, ModelNames
from service.api.checked_plan import (
    CheckedAnswer,
    CheckedStream,
    Plan,
    Surface,
    choice_verdicts,
    conscience_summary,
    forwarded_chunks,
    observe_upstream,
    replacement,
    response_headers,
    reviewed_verdicts,
)
from service.api.conscience_protocol import SamplingFields
from service.api.enforced_stream import EnforcedStream, with_usage_so_far
from service.api.refusals import refusal_error
from service.conscience.outcome import UNCHECKED
from service.conscience.pipeline import Case, ConsciencePipeline
from service.conscience.planning import Asked, Endpoint, RequestPlanner
from service.conscience.policy import PENDING, REFUSED_FINISH, PolicyRefusal
from service.conscience.usage import begin as begin_usage
from service.conscience.usage import received_usage
from service.core.backend import JSON, Backend, BackendError
from service.errors import APIError, error_body
from service.logs import client_request_id_var
from service.metrics import Metrics
from service.security.cache import ClientIdentity
from service.settings import Mode, Settings


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
        self._backend = backend
        self._pipeline = pipeline
        self._planner = planner
        self._settings = settings
        self._models = models
        self._catalog = catalog
        self._metrics = metrics
        self._enforced_stream = EnforcedStream(
            surface, pipeline, metrics, window_chars=settings.policy.stream_window_chars,
            judge_context_chars=settings.policy.stream_judge_context_chars,
        )

    # --- planning ------------------------------------------------------------------------
    async def _plan(
        self, request: SamplingFields, caller: ClientIdentity | None, request_id: str, endpoint: Endpoint
    ) -> Plan:
        policy_model = await self._catalog.serve(self._models, request.model)
        if policy_model is None:
            raise APIError(400, "you must provide a model parameter", param="model")
        await self._check_token_budget(request, policy_model)
        body = request.model_dump(exclude={"conscience"}, exclude_unset=True)
        body["model"] = policy_model
        options = request.conscience
        asked = Asked(options.framework, options.mode, options.judge_style) if options else Asked()
        try:
            return self._planner.plan(
                self._surface, body, asked, caller, endpoint=endpoint, judge_model=self._models.judge,
                request_id=request_id, client_request_id=client_request_id_var.get(),
            )
        except PolicyRefusal as refusal:
            raise refusal_error(refusal) from None

    async def _check_token_budget(self, request: SamplingFields, model: str) -> None:
        """A 400 for an output budget no answer can have: past --max-tokens-limit or the served
        model's context length (vLLM says so too; the embedded engine would silently cut it).
        The context length is looked up only for a request that sets a budget."""
        budgets = {param: getattr(request, param, None) for param in ("max_tokens", "max_completion_tokens")}
        budgets = {param: wanted for param, wanted in budgets.items() if wanted is not None}
        if not budgets:
            return
        bounds = [(self._settings.limits.max_tokens, "this server's limit (--max-tokens-limit)"),
                  (await self._catalog.context_len(model), f"the context length of `{model}`")]
        for param, wanted in budgets.items():
            for bound, what in bounds:
                if bound is not None and wanted > bound:
                    raise APIError(
                        400, f"{param} is {wanted}, more than {what}: {bound} tokens.", param=param
                    )

    def _cases(self, body: JSON, texts: list[str]) -> list[Case]:
        conversations = self._surface.conversations(body, len(texts))
        return [Case(conversation, text) for conversation, text in zip(conversations, texts, strict=True)]

    # --- entry point -----------------------------------------------------------------------
    async def create(
        self, request: SamplingFields, caller: ClientIdentity | None, request_id: str, *,
        endpoint: Endpoint | None = None,
    ) -> CheckedAnswer | CheckedStream:
        """The checked answer as data, for the surface to frame: a completion, or (`stream`)
        its chunks. `caller`: the client's API key (None: keys are not required and none was
        sent); `endpoint`: what the records name (default: the surface's own)."""
        plan = await self._plan(request, caller, request_id, endpoint or self._surface.endpoint)
        begin_usage(plan.framework.name, self._metrics.stage_tokens)  # the conscience's tokens
        # Until its records are written (a stream's: once it has ended, in its own generator).
        with self._pipeline.until_recorded(plan.context, plan.body.get("n", 1)):
            if request.stream:
                try:
                    return await self._stream(plan)  # the stream gives its review slots back as it ends
                except BaseException:
                    plan.reserved.release()
                    raise
            try:
                return await self._complete(plan)
            finally:
                plan.reserved.release()  # no-op once the review has released or taken them

    async def _complete(self, plan: Plan) -> CheckedAnswer:
        started = time.perf_counter()
        response = await self._surface.create(self._backend, plan.body)
        upstream_ms = observe_upstream(self._metrics, started)
        choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
        if plan.mode is not Mode.OFF:  # the judge reads what the client gets, and no more is sent
            choices = response["choices"] = [self._surface.forwarded(c, plan.body) for c in choices]
        if plan.mode is Mode.OFF:
            self._pipeline.skipped(plan.context, len(choices))
            verdicts = choice_verdicts(len(choices), UNCHECKED)
        else:
            cases = self._cases(plan.body, [self._surface.choice_text(c) for c in choices])
            if plan.mode is Mode.MONITOR:
                scheduled = self._pipeline.check_later(
                    plan.context, cases, upstream_ms=upstream_ms, reserved=plan.reserved
                )
                verdicts = choice_verdicts(len(choices), PENDING if scheduled else UNCHECKED)
            else:
                reviews = await self._pipeline.check(
                    plan.context, cases, upstream_ms=upstream_ms, reserved=plan.reserved
                )
                verdicts = reviewed_verdicts(reviews)
                for choice, review, verdict in zip(choices, reviews, verdicts, strict=True):
                    replaced = replacement(self._surface, choice, review, verdict)
                    if replaced is None:
                        continue
                    if replaced.tool_calls is not None:
                        self._surface.rewrite_tool_calls(choice, replaced.tool_calls, replaced.finish_reason)
                    else:
                        self._surface.rewrite_choice(choice, replaced.text, replaced.finish_reason)
                    if len(choices) == 1 and response.get("usage"):
                        refused = replaced.finish_reason == REFUSED_FINISH
                        response["usage"] = received_usage(response["usage"], True, refused)
        summary = conscience_summary(plan, verdicts)
        response["conscience"] = summary
        self._metrics.stage_seconds.labels("total").observe(time.perf_counter() - started)
        return CheckedAnswer(response, response_headers(summary))

    # --- streaming -------------------------------------------------------------------------
    async def _stream(self, plan: Plan) -> CheckedStream:
        started = time.perf_counter()
        chunks = self._surface.stream(self._backend, with_usage_so_far(plan.body) if plan.windowed else plan.body)
        if plan.mode is Mode.ENFORCE:
            return await self._enforced_stream.open(plan, chunks, started)
        if plan.mode is Mode.MONITOR:  # only what the judge reads
            chunks = forwarded_chunks(self._surface, chunks, plan.body)
        # Fetch the first chunk before answering so that an upstream failure is an HTTP error.
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = None
        label = PENDING if plan.mode is Mode.MONITOR else UNCHECKED
        summary = conscience_summary(plan, choice_verdicts(plan.body.get("n", 1), label))
        return CheckedStream(self._pass_through(plan, first, chunks, summary, started), response_headers(summary))

    async def _pass_through(
        self, plan: Plan, first: JSON | None, chunks: AsyncIterator[JSON], summary: JSON, started: float
    ) -> AsyncIterator[JSON]:
        try:
            async for chunk in self._passed_through(plan, first, chunks, summary, started):
                yield chunk
        finally:  # a client gone or an upstream failure: no review will use the slots
            plan.reserved.release()  # (no-op once check_later has taken them)

    async def _passed_through(
        self, plan: Plan, first: JSON | None, chunks: AsyncIterator[JSON], summary: JSON, started: float
    ) -> AsyncIterator[JSON]:
        """Off and monitor: the upstream's chunks as they come. Whatever ends the stream — its
        end, an upstream failure, the client leaving — what the client received is reviewed in
        the background (monitor) or counted as sent unjudged (off); nothing in `finally` awaits,
        as a client that left has cancelled this request's scope."""
        deltas: dict[int, list[JSON]] = {}
        held = first
        try:
            try:
                async for chunk in chunks:
                    self._collect(held, deltas)
                    yield held
                    held = chunk
            except BackendError as exc:
                yield error_body(exc.message, exc.error_type, exc.param, exc.code)
                return
            if held is not None:
                self._collect(held, deltas)
                held["conscience"] = summary
                yield held
        finally:
            self._after_pass_through(plan, deltas, started)

    def _after_pass_through(self, plan: Plan, deltas: dict[int, list[JSON]], started: float) -> None:
        upstream_ms = observe_upstream(self._metrics, started)
        if plan.mode is Mode.OFF:
            self._pipeline.skipped(plan.context, len(deltas))
        elif plan.mode is Mode.MONITOR and deltas:
            _, texts = self._streamed_texts(deltas)
            self._pipeline.check_later(
                plan.context, self._cases(plan.body, texts), upstream_ms=upstream_ms, reserved=plan.reserved
            )

    @staticmethod
    def _collect(chunk: JSON | None, deltas: dict[int, list[JSON]]) -> None:
        for choice in (chunk or {}).get("choices") or []:
            deltas.setdefault(choice.get("index", 0), []).append(choice)

    def _streamed_texts(self, deltas: dict[int, list[JSON]]) -> tuple[list[int], list[str]]:
        """The streamed choices' indices, in order, and all that the judge reads of each."""
        indices = sorted(deltas)
        merged = [self._surface.merge_deltas(deltas[i]) for i in indices]
        return indices, [self._surface.choice_text(choice) for choice in merged]
