"""Enforce mode's streams, one path: the upstream's stream tapped (service/api/windowed_stream.py),
every choice through its own enforcement (`ConsciencePipeline.stream_choices`, which also
records each one however the stream ends), and the text it releases turned into chunks.

- Windowed (text and reasoning): each choice released window by window as the conscience
  passes it, a flagged one repaired in place, the choices' chunks interleaved as they come.
  The headers say `pending`; the last chunk carries the verdicts, each choice's `stream`
  summary and the usage of what the client received.
- Buffered (`enforce_streaming: buffered`, tools, logprobs, a batch of prompts, or a stream that
  opens with a call or a refusal): the same enforcement with one unbounded window, over each
  choice as the judge reads it once the upstream has ended; decided before the response starts
  (so the headers carry the verdict, and an upstream failure is an HTTP error), then replayed —
  the original chunks for the choices that stand, fresh ones for those replaced (a tool call
  repaired as a call).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from service.api.checked_plan import (
    CheckedStream,
    Replacement,
    Surface,
    choice_verdicts,
    conscience_summary,
    forwarded_chunks,
    observe_upstream,
    replacement,
    response_headers,
    reviewed_verdicts,
)
from service.api.windowed_stream import StreamTap
from service.conscience.choices import StreamedChoices
from service.conscience.engine import one_chunk
from service.conscience.outcome import Review
from service.conscience.pipeline import ConsciencePipeline
from service.conscience.planning import Plan
from service.conscience.policy import PENDING, REFUSED_FINISH, finish_reason, replaces_answer
from service.conscience.usage import received_usage
from service.core.backend import JSON, BackendError
from service.errors import error_body
from service.metrics import Metrics


async def _chained(first: list[JSON], rest: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
    for chunk in first:
        yield chunk
    async for chunk in rest:
        yield chunk


class EnforcedStream:
    def __init__(
        self, surface: Surface, pipeline: ConsciencePipeline, metrics: Metrics, *, window_chars: int,
        judge_context_chars: int,
    ) -> None:
        self._surface = surface
        self._pipeline = pipeline
        self._metrics = metrics
        self._window_chars = window_chars
        self._judge_context_chars = judge_context_chars

    async def open(self, plan: Plan, chunks: AsyncIterator[JSON], started: float) -> CheckedStream:
        """The checked stream of `chunks` (the upstream's, asked at `started`): windowed where
        the plan says so and the stream opens with text or reasoning, else buffered."""
        if plan.windowed:
            # Fetch the first chunks before answering so that an upstream failure is an HTTP error.
            fetched, plain = await StreamTap.prefetch(self._surface, chunks)
            if plain:
                count = plan.body.get("n", 1)
                tap = StreamTap(self._surface, fetched, chunks, count)
                pending = conscience_summary(plan, choice_verdicts(count, PENDING))
                choices = self._choices(plan, tap, lambda: observe_upstream(self._metrics, started))
                return CheckedStream(self._windowed(plan, tap, choices, started), response_headers(pending))
            chunks = _chained(fetched, chunks)
        buffered = [chunk async for chunk in forwarded_chunks(self._surface, chunks, plan.body)]
        upstream_ms = observe_upstream(self._metrics, started)
        return await self._buffered(plan, buffered, upstream_ms)

    def _choices(self, plan: Plan, tap: StreamTap, upstream_ms: Callable[[], float]) -> StreamedChoices:
        count = tap.choice_count
        return self._pipeline.stream_choices(
            plan.context, self._surface.conversations(plan.body, count), [tap.texts(i) for i in range(count)],
            window_chars=self._window_chars, judge_context_chars=self._judge_context_chars,
            continued=[lambda released, i=i: tap.continued(i, released) for i in range(count)],
            reserved=plan.reserved, close_upstream=tap.close, upstream_ms=upstream_ms,
        )

    # --- windowed --------------------------------------------------------------------------
    async def _windowed(
        self, plan: Plan, tap: StreamTap, choices: StreamedChoices, started: float
    ) -> AsyncIterator[JSON]:
        """Release each choice window by window as the conscience passes it (repairing a
        flagged one in place), the choices' chunks as they come; the last chunk carries the
        verdicts, the `stream` summaries and the usage of what the client received."""
        try:
            async for index, text in choices:
                for chunk in self._released_chunks(tap, index, choices.outcome(index), text):
                    yield chunk
        except BackendError as exc:  # the upstream, or the budget (429): nothing unjudged went out
            yield error_body(exc.message, exc.error_type, exc.param, exc.code)
            return
        outcomes = choices.reviews
        verdicts = reviewed_verdicts(outcomes)
        for verdict, outcome in zip(verdicts, outcomes, strict=True):
            verdict.stream = outcome.wire()
        summary = conscience_summary(plan, verdicts)
        if len(outcomes) == 1:
            summary["stream"] = outcomes[0].wire().model_dump(mode="json")
        out = [
            self._surface.text_chunk(
                tap.head, i, "",
                finish_reason(outcome) if replaces_answer(outcome) else (tap.finish_reason(i) or "stop"),
            )
            for i, outcome in enumerate(outcomes)
        ]
        usage = _windowed_usage(plan, tap, outcomes)
        if usage is not None:
            out.append({**tap.head, "object": out[0]["object"], "choices": [], "usage": usage})
        out[-1]["conscience"] = summary
        for chunk in out:
            yield chunk
        self._metrics.stage_seconds.labels("total").observe(time.perf_counter() - started)

    @staticmethod
    def _released_chunks(tap: StreamTap, index: int, review: Review, text: str) -> list[JSON]:
        if review.action == "refused":  # the refusal sentence is the answer's content
            tap.continued(index, review.released[: len(review.released) - len(text)])
        return tap.released(index, text)

    # --- buffered --------------------------------------------------------------------------
    async def _buffered(self, plan: Plan, buffered: list[JSON], upstream_ms: float) -> CheckedStream:
        """Each choice judged in one unbounded window (the same enforcement as a windowed
        stream's), then the stream replayed with the replaced choices rewritten."""
        deltas: dict[int, list[JSON]] = {}
        for chunk in buffered:
            for choice in chunk.get("choices") or []:
                deltas.setdefault(choice.get("index", 0), []).append(choice)
        indices = sorted(deltas)
        merged = [self._surface.merge_deltas(deltas[i]) for i in indices]
        choices = self._pipeline.stream_choices(
            plan.context, self._surface.conversations(plan.body, len(indices)),
            [one_chunk(self._surface.choice_text(choice)) for choice in merged], window_chars=None,
            reserved=plan.reserved, close_upstream=_closed, upstream_ms=lambda: upstream_ms,
        )
        async for _ in choices:  # one window: released once, at the end, replayed below
            pass
        reviews = choices.reviews
        verdicts = reviewed_verdicts(reviews)
        changed: dict[int, Replacement] = {}
        for i, choice, review, verdict in zip(indices, merged, reviews, verdicts, strict=True):
            replaced = replacement(self._surface, choice, review, verdict)
            if replaced is not None:
                changed[i] = replaced
        summary = conscience_summary(plan, verdicts)
        if len(indices) == 1 and changed:
            refused = changed[indices[0]].finish_reason == REFUSED_FINISH
            buffered = [
                {**chunk, "usage": received_usage(chunk["usage"], True, refused)} if chunk.get("usage") else chunk
                for chunk in buffered
            ]
        return CheckedStream(self._replay(buffered, changed, summary), response_headers(summary))

    async def _replay(
        self, buffered: list[JSON], changed: dict[int, Replacement], summary: JSON
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
                out.append(self._surface.tool_call_chunk(head, index, replaced.tool_calls))
            else:
                out.append(self._surface.text_chunk(head, index, replaced.text, None))
            out.append(self._surface.text_chunk(head, index, "", replaced.finish_reason))
        out.extend(usage_chunks)
        if not out:
            out.append({**head, "choices": []})
        out[-1] = {**out[-1], "conscience": summary}
        for chunk in out:
            yield chunk


async def _closed() -> None:
    """A buffered stream's upstream: read to its end already."""


def _windowed_usage(plan: Plan, tap: StreamTap, outcomes: list[Review]) -> JSON | None:
    """The usage chunk's `usage`, when the client asked for one: the upstream's while every
    choice went out as generated; else the text the client received — the deltas released
    (one token each, as vLLM streams), the refusal sentence none — and the prompt's tokens
    as the upstream reported them (vLLM, asked for `continuous_usage_stats`, does on every
    chunk; 0 when an upstream stopped early reported nothing)."""
    if not (plan.body.get("stream_options") or {}).get("include_usage"):
        return None
    upstream = tap.usage
    if not any(replaces_answer(outcome) for outcome in outcomes):
        return upstream
    prompt = (upstream or {}).get("prompt_tokens") or 0
    completion = sum(outcome.released_deltas for outcome in outcomes)
    kept = {k: v for k, v in (upstream or {}).items() if k != "completion_tokens_details"}
    return {**kept, "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def with_usage_so_far(body: JSON) -> JSON:
    """A windowed stream's body: when the client asked for usage, vLLM's usage on every chunk
    too, so that the prompt's tokens are known also when the stream is stopped early (the
    chunks the client gets are the proxy's own; only the last usage is passed on)."""
    options = body.get("stream_options")
    if not isinstance(options, dict) or not options.get("include_usage"):
        return body
    return {**body, "stream_options": {**options, "continuous_usage_stats": True}}
