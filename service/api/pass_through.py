"""Modes off and monitor: the upstream's answer goes to the client as it is (in monitor mode only
what the judge reads: `Surface.forwarded`), a stream's chunks as they come, holding back one so
that the last can carry the `conscience` object (`PassThroughCompletion`, `PassThroughStream`).
Monitor mode reviews what the client received in the background, off counts it as sent unjudged
(`ConsciencePipeline.review_later`, `skipped`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from service.api.checked_plan import (
    CheckedAnswer,
    CheckedStream,
    OpenedStream,
    Surface,
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


class _PassThrough:
    def __init__(self, surface: Surface, backend: Backend, pipeline: ConsciencePipeline, metrics: Metrics) -> None:
        self._surface = surface
        self._backend = backend
        self._pipeline = pipeline
        self._metrics = metrics


class PassThroughCompletion(_PassThrough):
    async def respond(self, plan: Plan, opened: OpenedStream | None = None) -> CheckedAnswer:
        """The completion as the upstream gives it; in monitor mode reviewed once the client
        has it. `opened` is never given: a completion is not a stream."""
        started = time.perf_counter()
        response = await self._surface.create(self._backend, plan.body)
        upstream_ms = observe_upstream(self._metrics, started)
        choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
        if plan.mode is Mode.OFF:
            self._pipeline.skipped(plan.context, len(choices))
            scheduled = False
        else:  # the judge reads what the client gets, and no more is sent
            choices = response["choices"] = [self._surface.forwarded(c, plan.body) for c in choices]
            scheduled = self._pipeline.review_later(
                plan.context, self._surface.conversations(plan.body, len(choices)),
                [self._surface.choice_text(c) for c in choices], upstream_ms=upstream_ms, reserved=plan.reserved,
            )
        summary = conscience_summary(plan, choice_verdicts(len(choices), PENDING if scheduled else UNCHECKED))
        response["conscience"] = summary
        self._metrics.stage_seconds.labels("total").observe(time.perf_counter() - started)
        return CheckedAnswer(response, response_headers(summary))


class PassThroughStream(_PassThrough):
    async def respond(self, plan: Plan, opened: OpenedStream | None = None) -> CheckedStream:
        """The stream as the upstream gives it, holding back one chunk so that the last can carry
        the `conscience` object; `opened`: its upstream stream, when another route opened it."""
        started = opened.started if opened else time.perf_counter()
        chunks = opened.chunks if opened else self._surface.stream(self._backend, plan.body)
        if plan.mode is Mode.MONITOR:  # only what the judge reads
            chunks = forwarded_chunks(self._surface, chunks, plan.body)
        label = PENDING if plan.mode is Mode.MONITOR else UNCHECKED
        summary = conscience_summary(plan, choice_verdicts(plan.body.get("n", 1), label))
        headers = response_headers(summary)
        # Fetch the first chunk before answering so that an upstream failure is an HTTP error.
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = None
        return CheckedStream(self._passed_through(plan, first, chunks, summary, started), headers)

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
                upstream_ms = observe_upstream(self._metrics, started)
                if plan.mode is Mode.OFF:
                    sent_choices = {choice.get("index", 0) for chunk in sent for choice in chunk.get("choices") or []}
                    self._pipeline.skipped(plan.context, len(sent_choices))
                else:
                    _, merged = merged_choices(self._surface, sent)
                    if merged:
                        self._pipeline.review_later(
                            plan.context, self._surface.conversations(plan.body, len(merged)),
                            [self._surface.choice_text(choice) for choice in merged], upstream_ms=upstream_ms,
                            reserved=plan.reserved,
                        )
            finally:
                plan.reserved.release()  # a no-op once check_later has taken them
