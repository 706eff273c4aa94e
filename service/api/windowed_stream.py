"""Windowed enforce streaming over HTTP: the chunks of an upstream stream as the text deltas
that the enforcement loop (`service/conscience/engine.py`) reviews, and the chunks the client gets back.

`StreamTap` reads the upstream's chunks (the first ones already fetched, so that an upstream
failure was still an HTTP error) in the background and hands each choice's deltas to that
choice's review (`texts(index)`: n > 1 gives one window sequence per choice), noting on the way
what the answer's last chunks need: the head (id, created, model), each choice's finish reason
and the usage. The upstream is closed once every choice's review has stopped reading it.

What a choice's review judges is the answer as the non-stream judge reads it
(`service/api/chat_completion/serving.py`): a chat answer's reasoning (`reasoning_content`, or
`reasoning`) as "[reasoning] ..." and then, on a line of its own, the content. `released` maps
the judged text a review releases back to the delta fields it came from (the "[reasoning] "
label and the line break are the judge's only, never sent), and `continued` tells a repair what
it continues: the released content, or, when the release ended inside the reasoning, a new
answer after it. A delta that is neither text nor reasoning (a refusal, a tool call), or
reasoning after the content has begun, is withheld: the client gets only what the judge has
passed.

`WindowedEnforcement` is the route of a stream the plan windows: each choice released window by
window as the conscience passes it (`ConsciencePipeline.stream_choices`, which also records each
one however the stream ends), a flagged one repaired in place, the choices' chunks interleaved
as they come. The headers say `pending`; the last chunk carries the verdicts, each choice's
`stream` summary and the usage of what the client received. A stream that opens with a call or
a refusal is handed to the buffered route.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from service.api.checked_plan import (
    CheckedAnswer,
    CheckedStream,
    OpenedStream,
    Route,
    Surface,
    choice_verdicts,
    conscience_summary,
    observe_upstream,
    response_headers,
    windowed_summary,
)
from service.conscience.choices import StreamedChoices
from service.conscience.outcome import Review
from service.conscience.pipeline import ConsciencePipeline
from service.conscience.planning import Plan
from service.conscience.policy import PENDING, finish_reason, replaces_answer
from service.core.backend import JSON, Backend, BackendError
from service.errors import error_body
from service.metrics import Metrics

_HEAD_FIELDS = ("id", "created", "model", "system_fingerprint")
_REASONING_FIELDS = ("reasoning_content", "reasoning")  # as the chat surface reads them
REASONING_LABEL = "[reasoning] "  # how the judge reads a reasoning (chat surface's rendering)
_END = math.inf


class DeltaText(Protocol):
    def delta_text(self, chunk_choice: JSON) -> str | None: ...
    def text_chunk(self, head: JSON, index: int, text: str, finish_reason: str | None) -> JSON: ...


def _reasoning(chunk_choice: JSON) -> tuple[str, str] | None:
    """A chat delta's reasoning (its field, its text), read once when sent under both names."""
    delta = chunk_choice.get("delta")
    if not isinstance(delta, dict):
        return None
    for key in _REASONING_FIELDS:
        if isinstance(delta.get(key), str) and delta[key]:
            return key, delta[key]
    return None


def _without_reasoning(chunk_choice: JSON) -> JSON:
    delta = {k: v for k, v in (chunk_choice.get("delta") or {}).items() if k not in _REASONING_FIELDS}
    return {**chunk_choice, "delta": delta}


@dataclass(slots=True)
class _Choice:
    """One choice's stream, in the judge's rendering: where its reasoning and content begin."""

    queue: asyncio.Queue[str | Exception | None] = field(default_factory=asyncio.Queue)
    finish_reason: str | None = None
    reasoning_field: str = "reasoning_content"
    reasoning_start: int | None = None  # judged-text offset of the reasoning (None: none)
    content_start: int | None = None  # judged-text offset of the content (None: not yet)
    rendered: int = 0  # judged text queued for the review
    mapped: int = 0  # judged text released and mapped back to chunks
    closed: bool = False

    def spans(self) -> list[tuple[str, float, float]]:
        """(field, start, end) of the judged text's parts that the client gets."""
        if self.reasoning_start is None:
            return [("content", self.content_start or 0, _END)]
        spans: list[tuple[str, float, float]] = []
        reasoning_end = _END if self.content_start is None else self.content_start - 1
        spans.append((self.reasoning_field, self.reasoning_start, reasoning_end))
        if self.content_start is not None:
            spans.append(("content", self.content_start, _END))
        return spans


class StreamTap:
    def __init__(
        self, surface: DeltaText, fetched: list[JSON], rest: AsyncIterator[JSON], choices: int = 1
    ) -> None:
        self._surface = surface
        self._fetched = fetched
        self._rest = rest
        self._choices = [_Choice() for _ in range(choices)]
        self._pump: asyncio.Task[None] | None = None
        self._closed = False
        self.head: JSON = {}
        self.usage: JSON | None = None  # the last usage the upstream reported
        self.withheld = 0  # deltas that were neither text nor reasoning, not sent

    @property
    def choice_count(self) -> int:
        return len(self._choices)

    def finish_reason(self, index: int) -> str | None:
        return self._choices[index].finish_reason

    @staticmethod
    async def prefetch(surface: DeltaText, chunks: AsyncIterator[JSON]) -> tuple[list[JSON], bool]:
        """The chunks up to the first one with something in it (text, reasoning or more), and
        whether that is text or reasoning: a stream that opens with a call is buffered instead."""
        fetched: list[JSON] = []
        async for chunk in chunks:
            fetched.append(chunk)
            for choice in chunk.get("choices") or []:
                if _reasoning(choice) is not None:
                    return fetched, True
                text = surface.delta_text(choice)
                if text is None:
                    return fetched, False
                if text:
                    return fetched, True
        return fetched, True

    async def texts(self, index: int = 0) -> AsyncIterator[str]:
        """Choice `index`'s judged text deltas; once every choice's are closed, so is the upstream."""
        choice = self._choices[index]
        if self._pump is None:
            self._pump = asyncio.create_task(self._read_all())
        try:
            while True:
                item = await choice.queue.get()
                if item is None:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            choice.closed = True
            if all(c.closed for c in self._choices):
                await self.close()

    async def close(self) -> None:
        """Stop reading the upstream and close its stream; every choice's `texts` ends with
        what was read so far."""
        if self._closed:
            return
        self._closed = True
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            for choice in self._choices:
                choice.queue.put_nowait(None)
        aclose = getattr(self._rest, "aclose", None)
        if aclose is not None:
            await aclose()

    async def _read_all(self) -> None:
        end: Exception | None = None
        try:
            for chunk in self._fetched:
                self._read(chunk)
            self._fetched = []
            async for chunk in self._rest:
                self._read(chunk)
        except Exception as exc:  # handed to every review, which decides what it means
            end = exc
        for choice in self._choices:
            choice.queue.put_nowait(end)

    def _read(self, chunk: JSON) -> None:
        if not self.head:
            self.head = {k: chunk[k] for k in _HEAD_FIELDS if k in chunk}
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for chunk_choice in chunk.get("choices") or []:
            index = chunk_choice.get("index", 0)
            if not isinstance(index, int) or not 0 <= index < len(self._choices):
                continue
            choice = self._choices[index]
            if chunk_choice.get("finish_reason"):
                choice.finish_reason = chunk_choice["finish_reason"]
            judged = self._judged(choice, chunk_choice)
            if judged:
                choice.rendered += len(judged)
                choice.queue.put_nowait(judged)

    def _judged(self, choice: _Choice, chunk_choice: JSON) -> str:
        """The delta as the judge reads it, appended to the choice's judged text so far."""
        reasoning = _reasoning(chunk_choice)
        text = self._surface.delta_text(_without_reasoning(chunk_choice) if reasoning else chunk_choice)
        if text is None:
            self.withheld += 1
            text = ""
        judged = ""
        if reasoning is not None:
            if choice.content_start is not None:  # reasoning after the content: not in order
                self.withheld += 1
            else:
                if choice.reasoning_start is None:
                    choice.reasoning_field = reasoning[0]
                    choice.reasoning_start = choice.rendered + len(REASONING_LABEL)
                    judged = REASONING_LABEL
                judged += reasoning[1]
        if text:
            if choice.content_start is None:
                if choice.reasoning_start is not None:
                    judged += "\n"
                choice.content_start = choice.rendered + len(judged)
            judged += text
        return judged

    def released(self, index: int, text: str) -> list[JSON]:
        """The chunks that send `text`, the next piece of judged text choice `index` released."""
        choice = self._choices[index]
        start, end = choice.mapped, choice.mapped + len(text)
        choice.mapped = end
        chunks = []
        for name, low, high in choice.spans():
            a, b = max(start, low), min(end, high)
            if a >= b:
                continue
            piece = text[int(a) - start:int(b) - start]
            chunk = self._surface.text_chunk(self.head, index, piece, None)
            if name != "content":
                chunk["choices"][0]["delta"] = {"role": "assistant", name: piece}
            chunks.append(chunk)
        return chunks

    def last_chunks(self, outcomes: list[Review], body: JSON) -> list[JSON]:
        """The chunks that end the stream: each choice's finish reason, and the usage chunk when
        the client asked for one (`body`)."""
        out = [
            self._surface.text_chunk(
                self.head, i, "",
                finish_reason(outcome) if replaces_answer(outcome) else (self.finish_reason(i) or "stop"),
            )
            for i, outcome in enumerate(outcomes)
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = self._usage_received(outcomes)
            if usage is not None:
                out.append({**self.head, "object": out[0]["object"], "choices": [], "usage": usage})
        return out

    def _usage_received(self, outcomes: list[Review]) -> JSON | None:
        """The usage chunk's `usage`: the upstream's while every choice went out as generated;
        else the text the client received — the deltas released (one token each, as vLLM
        streams), the refusal sentence none — and the prompt's tokens as the upstream reported
        them (vLLM, asked for `continuous_usage_stats`, does on every chunk; 0 when an upstream
        stopped early reported nothing)."""
        if not any(replaces_answer(outcome) for outcome in outcomes):
            return self.usage
        prompt = (self.usage or {}).get("prompt_tokens") or 0
        completion = sum(outcome.released_deltas for outcome in outcomes)
        kept = {k: v for k, v in (self.usage or {}).items() if k != "completion_tokens_details"}
        return {**kept, "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def continued(self, index: int, released: str) -> tuple[str, str]:
        """What a repair of choice `index` continues of the `released` judged text, and the
        text that joins the repair's deltas to it: the released content as it is; nothing, after
        a reasoning, which stays, and what follows is the content."""
        choice = self._choices[index]
        if not released:
            choice.reasoning_start, choice.content_start = None, 0
            return "", ""
        if choice.reasoning_start is None:
            return released[choice.content_start or 0:], ""
        if choice.content_start is not None and choice.content_start <= len(released):
            return released[choice.content_start:], ""
        choice.content_start = len(released) + 1
        return "", "\n"


class WindowedEnforcement:
    def __init__(
        self, surface: Surface, backend: Backend, pipeline: ConsciencePipeline, metrics: Metrics, *,
        buffered: Route, window_chars: int, judge_context_chars: int,
    ) -> None:
        """`buffered`: the route of a stream that opens with something other than text."""
        self._surface = surface
        self._backend = backend
        self._pipeline = pipeline
        self._metrics = metrics
        self._buffered = buffered
        self._window_chars = window_chars
        self._judge_context_chars = judge_context_chars

    async def respond(self, plan: Plan, opened: OpenedStream | None = None) -> CheckedAnswer | CheckedStream:
        """The stream released window by window, once its first chunks say it opens with text or
        reasoning (fetched before answering, so that an upstream failure is an HTTP error)."""
        started = opened.started if opened else time.perf_counter()
        chunks = opened.chunks if opened else self._surface.stream(self._backend, with_usage_so_far(plan.body))
        fetched, plain = await StreamTap.prefetch(self._surface, chunks)
        if not plain:
            return await self._buffered.respond(plan, OpenedStream(_chained(fetched, chunks), started))
        count = plan.body.get("n", 1)
        tap = StreamTap(self._surface, fetched, chunks, count)
        headers = response_headers(conscience_summary(plan, choice_verdicts(count, PENDING)))

        def upstream_ms() -> float:
            return observe_upstream(self._metrics, started)

        enforced = self._pipeline.stream_choices(
            plan.context, self._surface.conversations(plan.body, count), [tap.texts(i) for i in range(count)],
            window_chars=self._window_chars, judge_context_chars=self._judge_context_chars,
            continued=[lambda released, i=i: tap.continued(i, released) for i in range(count)],
            reserved=plan.reserved, close_upstream=tap.close, upstream_ms=upstream_ms,
        )
        return CheckedStream(self._released(plan, tap, enforced, started), headers)

    async def _released(
        self, plan: Plan, tap: StreamTap, enforced: StreamedChoices, started: float
    ) -> AsyncIterator[JSON]:
        """Each choice's text as the conscience releases it (a flagged one repaired in place);
        the last chunk carries the verdicts, the `stream` summaries and the usage of what the
        client received."""
        try:
            async for index, text in enforced:
                review = enforced.outcome(index)
                if review.action == "refused":  # the refusal sentence is the answer's content
                    tap.continued(index, review.released[: len(review.released) - len(text)])
                for chunk in tap.released(index, text):
                    yield chunk
        except BackendError as exc:  # the upstream, or the budget (429): nothing unjudged went out
            yield error_body(exc.message, exc.error_type, exc.param, exc.code)
            return
        last = tap.last_chunks(enforced.reviews, plan.body)
        last[-1]["conscience"] = windowed_summary(plan, enforced.reviews)
        for chunk in last:
            yield chunk
        self._metrics.stage_seconds.labels("total").observe(time.perf_counter() - started)


async def _chained(first: list[JSON], rest: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
    for chunk in first:
        yield chunk
    async for chunk in rest:
        yield chunk


def with_usage_so_far(body: JSON) -> JSON:
    """A windowed stream's body: when the client asked for usage, vLLM's usage on every chunk
    too, so that the prompt's tokens are known also when the stream is stopped early (the
    chunks the client gets are the proxy's own; only the last usage is passed on)."""
    options = body.get("stream_options")
    if not isinstance(options, dict) or not options.get("include_usage"):
        return body
    return {**body, "stream_options": {**options, "continuous_usage_stats": True}}
