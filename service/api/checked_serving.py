"""Serving logic shared by the checked surfaces (chat and legacy completions).

A `Surface` knows where a surface keeps its text; this module knows the modes:
- off: pass through;
- monitor: answer at once, review in the background;
- enforce: review first; a flagged choice is replaced by its repair (or a refusal).
Streams in enforce mode are windowed (service/api/windowed_stream.py: text and reasoning are
released as the conscience passes them, each choice in its own windows) or, with
`enforce_streaming: buffered`, tools, logprobs, a batch of prompts or a stream that opens with a
call or a refusal, buffered, decided, then replayed as chunks; in the other modes they pass
through, holding back one chunk so the last one can carry the `conscience` object.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

import orjson
from starlette.responses import Response, StreamingResponse

from service.adapters.served_models import ModelNames
from service.api.conscience_protocol import (
    ChoiceConscience,
    ConscienceResult,
    ConscienceUsage,
    SamplingFields,
    ToolCallConscience,
)
from service.api.windowed_stream import StreamTap
from service.backends.base import JSON, Backend, BackendError
from service.conscience.frameworks import Framework
from service.conscience.pipeline import Case, CheckContext, ConsciencePipeline
from service.conscience.policy import (
    PENDING,
    REFUSED_FINISH,
    PolicyRefusal,
    finish_reason,
    judge_model_or_refuse,
    replaces_answer,
    request_judge_style,
    request_mode,
    worst_verdict,
)
from service.conscience.review import UNCHECKED, Review, ReviewPolicy
from service.conscience.stream_review import StreamReview, StreamReviewSummary
from service.conscience.tool_calls import tool_call_outcome
from service.conscience.usage import begin as begin_usage
from service.conscience.usage import current as current_usage
from service.conscience.usage import received_usage
from service.errors import APIError, error_body
from service.metrics import Metrics
from service.security.cache import ClientIdentity
from service.settings import EnforceStreaming, Mode, Settings

_SSE_DONE = b"data: [DONE]\n\n"
# How the API answers a request the conscience policy refuses: (status, OpenAI error type).
_REFUSAL_STATUS = {
    "mode_not_allowed": (403, "permission_error"),
    "judge_style_not_allowed": (403, "permission_error"),
    "judge_model_unknown": (503, "api_error"),
}


class Surface(Protocol):
    endpoint: Literal["chat", "completions"]

    def validate(self, body: JSON) -> None:
        """Raise APIError for input the conscience cannot judge (checked before any call)."""

    async def create(self, backend: Backend, body: JSON) -> JSON: ...
    def stream(self, backend: Backend, body: JSON) -> AsyncIterator[JSON]: ...
    def conversations(self, body: JSON, choice_count: int) -> list[list[JSON]]: ...
    def choice_text(self, choice: JSON) -> str: ...
    def merge_deltas(self, chunk_choices: list[JSON]) -> JSON:
        """One choice's stream deltas (in order) as the choice `choice_text` reads."""
    def delta_text(self, chunk_choice: JSON) -> str | None:
        """A stream delta's plain text; None when it carries more (windowed streams buffer)."""
    def rewrite_choice(self, choice: JSON, text: str, finish_reason: str) -> None: ...
    def text_chunk(self, head: JSON, index: int, text: str, finish_reason: str | None) -> JSON: ...
    def tool_calls(self, choice: JSON) -> list[JSON]:
        """The calls a choice makes, as {id, name, arguments}."""
    def rewrite_tool_calls(self, choice: JSON, calls: list[JSON], finish_reason: str) -> None: ...
    def tool_call_chunk(self, head: JSON, index: int, calls: list[JSON]) -> JSON: ...


@dataclass(frozen=True, slots=True)
class _Replacement:
    finish_reason: str
    text: str = ""
    tool_calls: list[JSON] | None = None  # a repaired tool call: sent as calls, not text


@dataclass(slots=True)
class _Plan:
    body: JSON
    mode: Mode
    framework: Framework
    context: CheckContext


def sse(chunk: JSON) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def _chained(first: list[JSON], rest: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
    for chunk in first:
        yield chunk
    async for chunk in rest:
        yield chunk


class CheckedServing:
    def __init__(
        self,
        surface: Surface,
        backend: Backend,
        pipeline: ConsciencePipeline,
        frameworks: dict[str, Framework],
        settings: Settings,
        models: ModelNames,
        metrics: Metrics,
    ) -> None:
        self._surface = surface
        self._backend = backend
        self._pipeline = pipeline
        self._frameworks = frameworks
        self._settings = settings
        self._models = models
        self._metrics = metrics

    # --- planning ------------------------------------------------------------------------
    def _plan(self, request: SamplingFields, caller: ClientIdentity | None, request_id: str) -> _Plan:
        try:
            return self._planned(request, caller, request_id)
        except PolicyRefusal as refusal:
            status, error_type = _REFUSAL_STATUS[refusal.code]
            raise APIError(
                status, refusal.message, error_type=error_type, param=refusal.param, code=refusal.code
            ) from None

    def _planned(self, request: SamplingFields, caller: ClientIdentity | None, request_id: str) -> _Plan:
        key_framework, key_mode = (caller.framework, caller.mode) if caller else (None, None)
        options = request.conscience
        name = (options and options.framework) or key_framework or self._settings.framework
        framework = self._frameworks.get(name)
        if framework is None:
            raise APIError(
                400,
                f"Unknown conscience framework {name!r}; available: {', '.join(sorted(self._frameworks))}.",
                param="conscience.framework",
            )
        mode = request_mode(
            options.mode if options else None, Mode(key_mode) if key_mode else None, self._settings
        )
        policy_model = self._models.policy or request.model
        if not policy_model:
            raise APIError(400, "you must provide a model parameter", param="model")
        judge_model = judge_model_or_refuse(self._models.judge)
        body = request.model_dump(exclude={"conscience"}, exclude_unset=True)
        body["model"] = policy_model
        if request.n > self._settings.max_n:
            raise APIError(
                400, f"n: at most {self._settings.max_n} choices per request on this server.",
                param="n",
            )
        if mode is not Mode.OFF:
            self._surface.validate(body)
            self._pipeline.admit(mode, request.n)
        style = request_judge_style(options.judge_style if options else None, self._settings)
        context = CheckContext(
            request_id=request_id,
            endpoint=self._surface.endpoint,
            mode=mode,
            policy=ReviewPolicy(
                framework=framework,
                style=style,
                max_repairs=self._settings.max_repairs,
                failure_policy=self._settings.failure_policy,
                judge_model=judge_model,
            ),
            policy_model=policy_model,
            api_key_id=caller.id if caller else None,
        )
        return _Plan(body=body, mode=mode, framework=framework, context=context)

    def _summary(self, plan: _Plan, verdicts: list[ChoiceConscience]) -> JSON:
        scores = [v.score for v in verdicts if v.score is not None]
        return ConscienceResult(
            verdict=worst_verdict(v.verdict for v in verdicts),
            score=max(scores) if scores else None,
            signals=_max_signals(v.signals for v in verdicts),
            framework=plan.framework.name,
            mode=plan.mode,
            repaired=any(v.repaired for v in verdicts),
            refused=any(v.refused for v in verdicts),
            attempts=max((v.attempts for v in verdicts), default=0),
            judge_model=plan.context.policy.judge_model if plan.mode is not Mode.OFF else None,
            request_id=plan.context.request_id,
            choices=verdicts,
            usage=self._conscience_usage(plan),
        ).model_dump(mode="json")

    @staticmethod
    def _conscience_usage(plan: _Plan) -> ConscienceUsage | None:
        """Enforce mode: what the judge and repairer spent before the answer (monitor's come later)."""
        tokens = current_usage()
        if plan.mode is not Mode.ENFORCE or tokens is None:
            return None
        return ConscienceUsage.model_validate(tokens.wire())

    @staticmethod
    def _choice_verdicts(count: int, label: str) -> list[ChoiceConscience]:
        return [ChoiceConscience(index=i, verdict=label) for i in range(count)]

    @staticmethod
    def _reviewed_verdicts(reviews: list[Review]) -> list[ChoiceConscience]:
        return [
            ChoiceConscience(
                index=i, verdict=r.verdict, score=r.score, signals=r.signals, repaired=r.repaired,
                refused=r.refused, attempts=r.attempts,
            )
            for i, r in enumerate(reviews)
        ]

    @staticmethod
    def _headers(summary: JSON) -> dict[str, str]:
        return {
            "X-Conscience-Verdict": summary["verdict"],
            "X-Conscience-Repaired": "true" if summary["repaired"] else "false",
            "X-Request-Id": summary["request_id"],
        }

    def _cases(self, body: JSON, texts: list[str]) -> list[Case]:
        conversations = self._surface.conversations(body, len(texts))
        return [Case(conversation, text) for conversation, text in zip(conversations, texts, strict=True)]

    def _observe_upstream(self, started: float) -> float:
        elapsed = time.perf_counter() - started
        self._metrics.stage_seconds.labels("upstream").observe(elapsed)
        return elapsed * 1000.0

    # --- entry point -----------------------------------------------------------------------
    async def create(self, request: SamplingFields, caller: ClientIdentity | None, request_id: str) -> Response:
        """`caller`: the client's API key (None: keys are not required and none was sent)."""
        plan = self._plan(request, caller, request_id)
        begin_usage(plan.framework.name, self._metrics.stage_tokens)  # the conscience's tokens
        if request.stream:
            return await self._stream(plan)
        started = time.perf_counter()
        response = await self._surface.create(self._backend, plan.body)
        upstream_ms = self._observe_upstream(started)
        choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
        if plan.mode is Mode.OFF:
            self._pipeline.skipped(plan.context, len(choices))
            verdicts = self._choice_verdicts(len(choices), UNCHECKED)
        else:
            cases = self._cases(plan.body, [self._surface.choice_text(c) for c in choices])
            if plan.mode is Mode.MONITOR:
                self._pipeline.check_later(plan.context, cases, upstream_ms=upstream_ms)
                verdicts = self._choice_verdicts(len(choices), PENDING)
            else:
                reviews = await self._pipeline.check(plan.context, cases, upstream_ms=upstream_ms)
                verdicts = self._reviewed_verdicts(reviews)
                for choice, review, verdict in zip(choices, reviews, verdicts, strict=True):
                    replacement = self._replacement(choice, review, verdict)
                    if replacement is None:
                        continue
                    if replacement.tool_calls is not None:
                        self._surface.rewrite_tool_calls(choice, replacement.tool_calls, replacement.finish_reason)
                    else:
                        self._surface.rewrite_choice(choice, replacement.text, replacement.finish_reason)
                    if len(choices) == 1 and response.get("usage"):
                        refused = replacement.finish_reason == REFUSED_FINISH
                        response["usage"] = received_usage(response["usage"], True, refused)
        summary = self._summary(plan, verdicts)
        response["conscience"] = summary
        self._metrics.stage_seconds.labels("total").observe(time.perf_counter() - started)
        return Response(
            orjson.dumps(response), media_type="application/json", headers=self._headers(summary)
        )

    # --- streaming -------------------------------------------------------------------------
    async def _stream(self, plan: _Plan) -> Response:
        started = time.perf_counter()
        windowed = plan.mode is Mode.ENFORCE and self._windowed(plan)
        chunks = self._surface.stream(self._backend, _with_usage_so_far(plan.body) if windowed else plan.body)
        if windowed:
            # Fetch the first chunks before answering so that an upstream failure is an HTTP error.
            fetched, plain = await StreamTap.prefetch(self._surface, chunks)
            if plain:
                count = plan.body.get("n", 1)
                tap = StreamTap(self._surface, fetched, chunks, count)
                pending = self._summary(plan, self._choice_verdicts(count, PENDING))
                return StreamingResponse(
                    self._enforce_windowed(plan, tap, started),
                    media_type="text/event-stream", headers=self._headers(pending),
                )
            chunks = _chained(fetched, chunks)
        if plan.mode is Mode.ENFORCE:
            buffered = [chunk async for chunk in chunks]
            upstream_ms = self._observe_upstream(started)
            body, summary = await self._enforce_buffered(plan, buffered, upstream_ms)
            return StreamingResponse(
                body, media_type="text/event-stream", headers=self._headers(summary)
            )
        # Fetch the first chunk before answering so that an upstream failure is an HTTP error.
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = None
        label = PENDING if plan.mode is Mode.MONITOR else UNCHECKED
        summary = self._summary(plan, self._choice_verdicts(plan.body.get("n", 1), label))
        return StreamingResponse(
            self._pass_through(plan, first, chunks, summary, started),
            media_type="text/event-stream",
            headers=self._headers(summary),
        )

    def _windowed(self, plan: _Plan) -> bool:
        """Windowed enforce streaming applies to text and reasoning, any n; calls are buffered."""
        body = plan.body
        return (
            self._settings.enforce_streaming is EnforceStreaming.WINDOWED
            and not body.get("tools") and not body.get("functions")
            and not body.get("logprobs")
            and not isinstance(body.get("prompt"), list)
        )

    async def _enforce_windowed(self, plan: _Plan, tap: StreamTap, started: float) -> AsyncIterator[bytes]:
        """Release each choice window by window as the conscience passes it (repairing a
        flagged one in place), the choices' chunks as they come; the last chunk carries the
        verdicts, the `stream` summaries and the usage of what the client received."""
        count = tap.choice_count
        conversations = self._surface.conversations(plan.body, count)
        reviews = [
            self._pipeline.stream_review(
                plan.context, conversations[i], tap.texts(i),
                window_chars=self._settings.stream_window_chars,
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

        try:
            with self._pipeline.streaming(count):
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
                            for chunk in self._released_chunks(tap, index, reviews[index].summary, item):
                                yield sse(chunk)
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    await tap.close()
        except BackendError as exc:  # the upstream, or the budget (429): nothing unjudged went out
            yield sse(error_body(exc.message, exc.error_type, exc.param, exc.code))
            yield _SSE_DONE
            return
        upstream_ms = self._observe_upstream(started)
        outcomes = [
            self._pipeline.record_stream(
                plan.context, conversations[i], reviews[i].summary, upstream_ms=upstream_ms, index=i
            )
            for i in range(count)
        ]
        verdicts = self._reviewed_verdicts(outcomes)
        for verdict, review in zip(verdicts, reviews, strict=True):
            verdict.stream = review.summary.wire()
        summary = self._summary(plan, verdicts)
        if count == 1:
            summary["stream"] = reviews[0].summary.wire().model_dump(mode="json")
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
            yield sse(chunk)
        yield _SSE_DONE
        self._metrics.stage_seconds.labels("total").observe(time.perf_counter() - started)

    @staticmethod
    def _released_chunks(tap: StreamTap, index: int, review: StreamReviewSummary, text: str) -> list[JSON]:
        if review.action == "refused":  # the refusal sentence is the answer's content
            tap.continued(index, review.released[: len(review.released) - len(text)])
        return tap.released(index, text)

    @staticmethod
    def _windowed_usage(
        plan: _Plan, tap: StreamTap, reviews: list[StreamReview], outcomes: list[Review]
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
        completion = sum(review.summary.released_deltas for review in reviews)
        kept = {k: v for k, v in (upstream or {}).items() if k != "completion_tokens_details"}
        return {**kept, "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def _pass_through(
        self, plan: _Plan, first: JSON | None, chunks: AsyncIterator[JSON], summary: JSON, started: float
    ) -> AsyncIterator[bytes]:
        deltas: dict[int, list[JSON]] = {}
        held = first
        try:
            async for chunk in chunks:
                self._collect(held, deltas)
                yield sse(held)
                held = chunk
        except BackendError as exc:
            yield sse(error_body(exc.message, exc.error_type, exc.param, exc.code))
            yield _SSE_DONE
            return
        if held is not None:
            self._collect(held, deltas)
            held["conscience"] = summary
            yield sse(held)
        yield _SSE_DONE
        upstream_ms = self._observe_upstream(started)
        if plan.mode is Mode.OFF:
            self._pipeline.skipped(plan.context, len(deltas))
        elif plan.mode is Mode.MONITOR and deltas:
            _, texts = self._streamed_texts(deltas)
            self._pipeline.check_later(plan.context, self._cases(plan.body, texts), upstream_ms=upstream_ms)

    @staticmethod
    def _collect(chunk: JSON | None, deltas: dict[int, list[JSON]]) -> None:
        for choice in (chunk or {}).get("choices") or []:
            deltas.setdefault(choice.get("index", 0), []).append(choice)

    def _streamed_texts(self, deltas: dict[int, list[JSON]]) -> tuple[list[int], list[str]]:
        """The streamed choices' indices, in order, and all that the judge reads of each."""
        indices = sorted(deltas)
        merged = [self._surface.merge_deltas(deltas[i]) for i in indices]
        return indices, [self._surface.choice_text(choice) for choice in merged]

    async def _enforce_buffered(
        self, plan: _Plan, buffered: list[JSON], upstream_ms: float
    ) -> tuple[AsyncIterator[bytes], JSON]:
        deltas: dict[int, list[JSON]] = {}
        for chunk in buffered:
            self._collect(chunk, deltas)
        indices, texts = self._streamed_texts(deltas)
        cases = self._cases(plan.body, texts)
        reviews = await self._pipeline.check(plan.context, cases, upstream_ms=upstream_ms)
        verdicts = self._reviewed_verdicts(reviews)
        changed: dict[int, _Replacement] = {}
        for i, review, verdict in zip(indices, reviews, verdicts, strict=True):
            replacement = self._replacement(self._surface.merge_deltas(deltas[i]), review, verdict)
            if replacement is not None:
                changed[i] = replacement
        summary = self._summary(plan, verdicts)
        if len(indices) == 1 and changed:
            refused = changed[indices[0]].finish_reason == REFUSED_FINISH
            buffered = [
                {**chunk, "usage": received_usage(chunk["usage"], True, refused)} if chunk.get("usage") else chunk
                for chunk in buffered
            ]
        return self._replay(buffered, changed, summary), summary

    def _replacement(self, choice: JSON, review: Review, verdict: ChoiceConscience) -> _Replacement | None:
        """What replaces a choice the conscience did not pass (None: it stands). A flagged tool
        call is repaired as a call or withheld (service/conscience/tool_calls.py), never turned
        into plain text; `verdict` names each tool called and what became of it."""
        calls = self._surface.tool_calls(choice)
        outcome = tool_call_outcome(review, calls) if calls and replaces_answer(review) else None
        if calls:
            action = outcome.action if outcome is not None else "passed"
            verdict.tool_calls = [
                ToolCallConscience(name=str(call.get("name") or "?"), verdict=review.verdict, action=action)
                for call in calls
            ]
        if outcome is not None:
            if outcome.action == "withheld":
                verdict.repaired, verdict.refused = False, True
            return _Replacement(outcome.finish_reason, outcome.text or "", outcome.tool_calls)
        if replaces_answer(review):
            return _Replacement(finish_reason(review), review.final_text)
        return None

    async def _replay(
        self, buffered: list[JSON], changed: dict[int, _Replacement], summary: JSON
    ) -> AsyncIterator[bytes]:
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
        for index, replacement in sorted(changed.items()):
            if replacement.tool_calls is not None:
                out.append(self._surface.tool_call_chunk(head, index, replacement.tool_calls))
            else:
                out.append(self._surface.text_chunk(head, index, replacement.text, None))
            out.append(self._surface.text_chunk(head, index, "", replacement.finish_reason))
        out.extend(usage_chunks)
        if not out:
            out.append({**head, "choices": []})
        out[-1] = {**out[-1], "conscience": summary}
        for chunk in out:
            yield sse(chunk)
        yield _SSE_DONE


def _with_usage_so_far(body: JSON) -> JSON:
    """A windowed stream's body: when the client asked for usage, vLLM's usage on every chunk
    too, so that the prompt's tokens are known also when the stream is stopped early (the
    chunks the client gets are the proxy's own; only the last usage is passed on)."""
    options = body.get("stream_options")
    if not isinstance(options, dict) or not options.get("include_usage"):
        return body
    return {**body, "stream_options": {**options, "continuous_usage_stats": True}}


def _max_signals(per_choice: Iterable[dict[str, float] | None]) -> dict[str, float] | None:
    """Each verdict signal's highest score over the choices (None: no signal ran)."""
    merged: dict[str, float] = {}
    for signals in per_choice:
        for name, score in (signals or {}).items():
            merged[name] = max(score, merged.get(name, score))
    return merged or None
