"""Modes off and monitor: the upstream's answer goes to the client as it is (in monitor mode only
what the judge reads: `Surface.forwarded`), a stream's chunks as they come, holding back one so
that the last can carry the `conscience` object. Monitor mode reviews what the client received in
the background (`ConsciencePipeline.check_later`); off counts it as sent unjudged.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from service.api.checked_plan import (
    CheckedAnswer,
    CheckedStream,
    OpenedStream,
    Surface,
    choice_cases,
    choice_verdicts,
    conscience_summary,
    forwarded_chunks,
    merged_choices,
    observe_upstream,
    response_headers,
)
from service.conscience.outcome import UNCHECKED
from service.conscience.pipeline import ConsciencePipeline
from service.conscience.planning import Plan
from service.conscience.policy import PENDING
from service.core.backend import JSON, Backend, BackendError
from service.errors import error_body
from service.metrics import Metrics
from service.settings import Mode


class PassThrough:
    def __init__(self, surface: Surface, backend: Backend, pipeline: ConsciencePipeline, metrics: Metrics) -> None:
        self._surface = surface
        self._backend = backend
        self._pipeline = pipeline
        self._metrics = metrics

    async def respond(self, plan: Plan, opened: OpenedStream | None = None) -> CheckedAnswer | CheckedStream:
        """The answer as the upstream gives it; in monitor mode reviewed once the client has it."""
        started = opened.started if opened else time.perf_counter()
        label = PENDING if plan.mode is Mode.MONITOR else UNCHECKED
        if not plan.body.get("stream"):
            return await self._completion(plan, label, started)
        chunks = opened.chunks if opened else self._surface.stream(self._backend, plan.body)
        if plan.mode is Mode.MONITOR:  # only what the judge reads
            chunks = forwarded_chunks(self._surface, chunks, plan.body)
        # Fetch the first chunk before answering so that an upstream failure is an HTTP error.
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = None
        summary = conscience_summary(plan, choice_verdicts(plan.body.get("n", 1), label))
        return CheckedStream(self._passed_through(plan, first, chunks, summary, started), response_headers(summary))

    async def _completion(self, plan: Plan, label: str, started: float) -> CheckedAnswer:
        response = await self._surface.create(self._backend, plan.body)
        upstream_ms = observe_upstream(self._metrics, started)
        choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
        if plan.mode is Mode.MONITOR:  # the judge reads what the client gets, and no more is sent
            choices = response["choices"] = [self._surface.forwarded(c, plan.body) for c in choices]
            texts = [self._surface.choice_text(c) for c in choices]
            scheduled = self._pipeline.check_later(
                plan.context, choice_cases(self._surface, plan.body, texts), upstream_ms=upstream_ms,
                reserved=plan.reserved,
            )
            label = label if scheduled else UNCHECKED
        else:
            self._pipeline.skipped(plan.context, len(choices))
        summary = conscience_summary(plan, choice_verdicts(len(choices), label))
        response["conscience"] = summary
        self._metrics.stage_seconds.labels("total").observe(time.perf_counter() - started)
        return CheckedAnswer(response, response_headers(summary))

    async def _passed_through(
        self, plan: Plan, first: JSON | None, chunks: AsyncIterator[JSON], summary: JSON, started: float
    ) -> AsyncIterator[JSON]:
        """The upstream's chunks as they come. Whatever ends the stream — its end, an upstream
        failure, the client leaving — what the client received is reviewed in the background
        (monitor) or counted as sent unjudged (off), and review slots no review took are given
        back; nothing in `finally` awaits, as a client that left has cancelled this request's
        scope."""
        sent: list[JSON] = []
        held = first
        try:
            try:
                async for chunk in chunks:
                    if held is not None:
                        sent.append(held)
                    yield held
                    held = chunk
            except BackendError as exc:
                yield error_body(exc.message, exc.error_type, exc.param, exc.code)
                return
            if held is not None:
                sent.append(held)
                held["conscience"] = summary
                yield held
        finally:
            try:
                self._after(plan, sent, started)
            finally:
                plan.reserved.release()  # a no-op once check_later has taken them

    def _after(self, plan: Plan, sent: list[JSON], started: float) -> None:
        upstream_ms = observe_upstream(self._metrics, started)
        _, merged = merged_choices(self._surface, sent)
        if plan.mode is Mode.OFF:
            self._pipeline.skipped(plan.context, len(merged))
        elif merged:
            texts = [self._surface.choice_text(choice) for choice in merged]
            self._pipeline.check_later(
                plan.context, choice_cases(self._surface, plan.body, texts), upstream_ms=upstream_ms,
                reserved=plan.reserved,
            )
