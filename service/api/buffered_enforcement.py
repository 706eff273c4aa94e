"""Enforce mode, buffered: the whole answer judged before the client gets any of it — a
completion, or a stream that is buffered (`enforce_streaming: buffered`, tools, logprobs, a batch
of prompts, or a windowed stream that opened with a call or a refusal): `EnforcedCompletion`,
`EnforcedBufferedStream`.

Each choice, as the judge reads it (`Surface.forwarded`), goes through the one enforcement loop
as a stream of one chunk judged in one unbounded window (`ConsciencePipeline.stream_choices`,
which also records it however the request ends). The verdict is decided before the response
starts, so the headers carry it and an upstream failure is an HTTP error. A completion has its
replaced choices rewritten; a stream is replayed — the original chunks for the choices that
stand, fresh ones for those replaced (a tool call repaired as a call).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from service.api.checked_plan import (
    CheckedAnswer,
    CheckedStream,
    OpenedStream,
    Surface,
    conscience_summary,
    forwarded_chunks,
    merged_choices,
    observe_upstream,
    response_headers,
    reviewed_verdicts,
)
from service.conscience.outcome import Review
from service.conscience.pipeline import ConsciencePipeline
from service.conscience.planning import Plan
from service.conscience.policy import REFUSED_FINISH
from service.conscience.tool_calls import Replacement, replacement
from service.conscience.usage import received_usage
from service.core.backend import JSON, Backend
from service.metrics import Metrics


class WholeAnswers:
    """Whole answers through the conscience: each one's review, the tools it calls, and what
    replaces it (None: it stands)."""

    def __init__(self, surface: Surface, pipeline: ConsciencePipeline, metrics: Metrics) -> None:
        self._surface = surface
        self._pipeline = pipeline
        self._metrics = metrics

    async def judged(
        self, plan: Plan, choices: list[JSON], started: float
    ) -> tuple[list[Review], list[list[JSON]], list[Replacement | None]]:
        """`choices`, their upstream asked at `started` (perf_counter) and read to its end."""
        upstream_ms = observe_upstream(self._metrics, started)
        reviews = await self._pipeline.enforce_whole(
            plan.context, self._surface.conversations(plan.body, len(choices)),
            [self._surface.choice_text(choice) for choice in choices], reserved=plan.reserved,
            upstream_ms=upstream_ms,
        )
        calls = [self._surface.tool_calls(choice) for choice in choices]
        return reviews, calls, [replacement(review, c) for review, c in zip(reviews, calls, strict=True)]


class EnforcedCompletion:
    def __init__(self, surface: Surface, backend: Backend, pipeline: ConsciencePipeline, metrics: Metrics) -> None:
        self._surface = surface
        self._backend = backend
        self._metrics = metrics
        self._whole = WholeAnswers(surface, pipeline, metrics)

    async def respond(self, plan: Plan, opened: OpenedStream | None = None) -> CheckedAnswer:
        """The completion judged whole, its flagged choices rewritten as their repairs (or
        refusals). `opened` is never given: a completion is not a stream."""
        started = time.perf_counter()
        response = await self._surface.create(self._backend, plan.body)
        ordered = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
        # The judge reads what the client gets, and no more is sent.
        choices = response["choices"] = [self._surface.forwarded(c, plan.body) for c in ordered]
        reviews, calls, replaced = await self._whole.judged(plan, choices, started)
        for choice, replacing in zip(choices, replaced, strict=True):
            if replacing is None:
                continue
            if replacing.tool_calls is not None:
                self._surface.rewrite_tool_calls(choice, replacing.tool_calls, replacing.finish_reason)
            else:
                self._surface.rewrite_choice(choice, replacing.text, replacing.finish_reason)
            if len(choices) == 1 and response.get("usage"):
                response["usage"] = received_usage(response["usage"], True, replacing.finish_reason == REFUSED_FINISH)
        summary = conscience_summary(plan, reviewed_verdicts(reviews, calls, replaced))
        response["conscience"] = summary
        self._metrics.stage_seconds.labels("total").observe(time.perf_counter() - started)
        return CheckedAnswer(response, response_headers(summary))


class EnforcedBufferedStream:
    def __init__(self, surface: Surface, backend: Backend, pipeline: ConsciencePipeline, metrics: Metrics) -> None:
        self._surface = surface
        self._backend = backend
        self._metrics = metrics
        self._whole = WholeAnswers(surface, pipeline, metrics)

    async def respond(self, plan: Plan, opened: OpenedStream | None = None) -> CheckedStream:
        """The stream read to its end and judged whole, then replayed with its flagged choices
        replaced; `opened`: its upstream stream, when a windowed route handed it on."""
        started = opened.started if opened else time.perf_counter()
        chunks = opened.chunks if opened else self._surface.stream(self._backend, plan.body)
        buffered = [chunk async for chunk in forwarded_chunks(self._surface, chunks, plan.body)]
        indices, choices = merged_choices(self._surface, buffered)
        reviews, calls, replaced = await self._whole.judged(plan, choices, started)
        changed = {index: r for index, r in zip(indices, replaced, strict=True) if r is not None}
        if len(indices) == 1 and changed:
            refused = changed[indices[0]].finish_reason == REFUSED_FINISH
            buffered = [
                {**chunk, "usage": received_usage(chunk["usage"], True, refused)} if chunk.get("usage") else chunk
                for chunk in buffered
            ]
        summary = conscience_summary(plan, reviewed_verdicts(reviews, calls, replaced))
        headers = response_headers(summary)
        return CheckedStream(_replayed(self._surface, buffered, changed, summary), headers)


async def _replayed(
    surface: Surface, buffered: list[JSON], changed: dict[int, Replacement], summary: JSON
) -> AsyncIterator[JSON]:
    """Original chunks for the choices that stand; rewritten choices as fresh chunks."""
    usage_chunks: list[JSON] = []
    out: list[JSON] = []
    for chunk in buffered:
        if not chunk.get("choices") and chunk.get("usage"):
            usage_chunks.append(chunk)
            continue
        kept = [c for c in chunk.get("choices") or [] if c.get("index", 0) not in changed]
        if kept or not chunk.get("choices"):
            out.append({**chunk, "choices": kept})
    head = {k: v for k, v in (buffered[0] if buffered else {}).items() if k in ("id", "object", "created", "model")}
    for index, replaced in sorted(changed.items()):
        if replaced.tool_calls is not None:
            out.append(surface.tool_call_chunk(head, index, replaced.tool_calls))
        else:
            out.append(surface.text_chunk(head, index, replaced.text, None))
        out.append(surface.text_chunk(head, index, "", replaced.finish_reason))
    out.extend(usage_chunks)
    if not out:
        out.append({**head, "choices": []})
    out[-1] = {**out[-1], "conscience": summary}
    for chunk in out:
        yield chunk
