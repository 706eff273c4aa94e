"""Enforce mode's windowed stream: each choice released window by window as the conscience
passes it (the enforcement loop: service/conscience/engine.py), a flagged one repaired in place, the choices'
chunks interleaved as they come (service/api/windowed_stream.py taps the upstream's stream);
the last chunk carries the verdicts, each choice's `stream` summary and the usage of what the
client received.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from service.api.checked_plan import (
    Surface,
    conscience_summary,
    observe_upstream,
    reviewed_verdicts,
)
from service.api.windowed_stream import StreamTap
from service.backends.base import JSON, BackendError
from service.conscience.engine import Enforcement
from service.conscience.outcome import CLIENT_DISCONNECTED, Review
from service.conscience.pipeline import ConsciencePipeline
from service.conscience.planning import Plan
from service.conscience.policy import finish_reason, replaces_answer
from service.errors import error_body
from service.metrics import Metrics


class WindowedEnforcement:
    def __init__(
        self, surface: Surface, pipeline: ConsciencePipeline, metrics: Metrics, *, window_chars: int,
        judge_context_chars: int,
    ) -> None:
        self._surface = surface
        self._pipeline = pipeline
        self._metrics = metrics
        self._window_chars = window_chars
        self._judge_context_chars = judge_context_chars

    async def stream(self, plan: Plan, tap: StreamTap, started: float) -> AsyncIterator[JSON]:
        """Release each choice window by window as the conscience passes it (repairing a
        flagged one in place), the choices' chunks as they come; the last chunk carries the
        verdicts, the `stream` summaries and the usage of what the client received."""
        count = tap.choice_count
        conversations = self._surface.conversations(plan.body, count)
        reviews = [
            self._pipeline.stream_review(
                plan.context, conversations[i], tap.texts(i),
                window_chars=self._window_chars, judge_context_chars=self._judge_context_chars,
                continued=lambda released, i=i: tap.continued(i, released),
            )
            for i in range(count)
        ]
        released: asyncio.Queue[tuple[int, str | Exception | None]] = asyncio.Queue()

        async def review_choice(index: int) -> None:
            try:
                async with contextlib.aclosing(aiter(reviews[index])) as texts:
                    async for text in texts:
                        released.put_nowait((index, text))
            except Exception as exc:  # the upstream failed: the stream ends with its error
                released.put_nowait((index, exc))
                return
            released.put_nowait((index, None))

        handed_off = False
        tasks: list[asyncio.Task[None]] = []
        try:
            with self._pipeline.streaming(count, plan.reserved), self._pipeline.until_recorded(plan.context, count):
                tasks = [asyncio.create_task(review_choice(i)) for i in range(count)]
                try:
                    running = count
                    while running:
                        index, item = await released.get()
                        if item is None:
                            running -= 1
                        elif isinstance(item, Exception):
                            raise item
                        else:
                            for chunk in self._released_chunks(tap, index, reviews[index].outcome, item):
                                yield chunk
                except (GeneratorExit, asyncio.CancelledError):
                    if self._pipeline.shutting_down:  # ended by the shutdown: recorded as such
                        raise
                    # The client has gone mid-stream. Nothing here may await any more (the
                    # request's scope is cancelled): the reviews end, and are recorded, in the
                    # background.
                    handed_off = True
                    self._pipeline.in_background(
                        self._abandoned(plan, tap, conversations, reviews, tasks, started), plan.context.request_id
                    )
                    raise
                finally:
                    if not handed_off:
                        await _stop(tasks, tap)
        except BackendError as exc:  # the upstream, or the budget (429): nothing unjudged went out
            if tasks:  # the reviews ran (else the budget refused them): their records say how far
                for review in reviews:
                    review.outcome.error = review.outcome.error or f"upstream failed: {exc.message}"
                self._record_all(plan, conversations, reviews, started)
            yield error_body(exc.message, exc.error_type, exc.param, exc.code)
            return
        outcomes = self._record_all(plan, conversations, reviews, started)
        verdicts = reviewed_verdicts(outcomes)
        for verdict, review in zip(verdicts, reviews, strict=True):
            verdict.stream = review.outcome.wire()
        summary = conscience_summary(plan, verdicts)
        if count == 1:
            summary["stream"] = reviews[0].outcome.wire().model_dump(mode="json")
        out = [
            self._surface.text_chunk(
                tap.head, i, "",
                finish_reason(outcome) if replaces_answer(outcome) else (tap.finish_reason(i) or "stop"),
            )
            for i, outcome in enumerate(outcomes)
        ]
        usage = self._windowed_usage(plan, tap, reviews, outcomes)
        if usage is not None:
            out.append({**tap.head, "object": out[0]["object"], "choices": [], "usage": usage})
        out[-1]["conscience"] = summary
        for chunk in out:
            yield chunk
        self._metrics.stage_seconds.labels("total").observe(time.perf_counter() - started)

    def _record_all(
        self, plan: Plan, conversations: list[list[JSON]], reviews: list[Enforcement], started: float
    ) -> list[Review]:
        upstream_ms = observe_upstream(self._metrics, started)
        for i, review in enumerate(reviews):
            self._pipeline.record(plan.context, i, conversations[i], review.outcome, upstream_ms=upstream_ms)
        return [review.outcome for review in reviews]

    async def _abandoned(
        self, plan: Plan, tap: StreamTap, conversations: list[list[JSON]], reviews: list[Enforcement],
        tasks: list[asyncio.Task[None]], started: float,
    ) -> None:
        """After a client left mid-stream: the upstream stops, what it had generated is judged
        (a review already repairing stops at once: its verdict is in), no repair starts, and
        every choice is recorded with the error "client disconnected"."""
        for review, task in zip(reviews, tasks, strict=True):
            review.abandon(CLIENT_DISCONNECTED)
            if review.outcome.flagged_window is not None:
                task.cancel()
        await _stop(tasks, tap, cancel=False)
        self._record_all(plan, conversations, reviews, started)

    @staticmethod
    def _released_chunks(tap: StreamTap, index: int, review: Review, text: str) -> list[JSON]:
        if review.action == "refused":  # the refusal sentence is the answer's content
            tap.continued(index, review.released[: len(review.released) - len(text)])
        return tap.released(index, text)

    @staticmethod
    def _windowed_usage(
        plan: Plan, tap: StreamTap, reviews: list[Enforcement], outcomes: list[Review]
    ) -> JSON | None:
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
        completion = sum(review.outcome.released_deltas for review in reviews)
        kept = {k: v for k, v in (upstream or {}).items() if k != "completion_tokens_details"}
        return {**kept, "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _stop(tasks: list[asyncio.Task[None]], tap: StreamTap, *, cancel: bool = True) -> None:
    """End the choices' reviews (cancelled, or left to finish what was read) and the upstream."""
    if cancel:
        for task in tasks:
            task.cancel()
    else:
        await tap.close()  # every review's text ends here; each judges what it has
    await asyncio.gather(*tasks, return_exceptions=True)
    await tap.close()


def with_usage_so_far(body: JSON) -> JSON:
    """A windowed stream's body: when the client asked for usage, vLLM's usage on every chunk
    too, so that the prompt's tokens are known also when the stream is stopped early (the
    chunks the client gets are the proxy's own; only the last usage is passed on)."""
    options = body.get("stream_options")
    if not isinstance(options, dict) or not options.get("include_usage"):
        return body
    return {**body, "stream_options": {**options, "continuous_usage_stats": True}}
