"""Serving logic shared by the checked surfaces (chat and legacy completions).

A `Surface` knows where a surface keeps its text; this module knows the modes:
- off: pass through;
- monitor: answer at once, review in the background;
- enforce: review first; a flagged choice is replaced by its repair (or a refusal).
Streams in enforce mode are buffered, decided, then replayed as chunks; in the other modes
they pass through, holding back one chunk so the last one can carry the `conscience` object.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson
from starlette.responses import Response, StreamingResponse

from service.api.conscience_protocol import SamplingFields
from service.backends.base import JSON, Backend, BackendError
from service.conscience.frameworks import Framework
from service.conscience.pipeline import Case, CheckContext, ConsciencePipeline
from service.conscience.review import Review, ReviewPolicy
from service.errors import APIError, error_body
from service.metrics import Metrics
from service.served_models import ModelNames
from service.settings import JudgeStyle, Mode, Settings

PENDING = "pending"
_SEVERITY = {"ethical": 0, "neutral": 1, PENDING: 2, "unchecked": 3, "unethical": 4}
_SSE_DONE = b"data: [DONE]\n\n"
_STRICTNESS = {Mode.OFF: 0, Mode.MONITOR: 1, Mode.ENFORCE: 2}


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
    def rewrite_choice(self, choice: JSON, text: str, finish_reason: str) -> None: ...
    def text_chunk(self, head: JSON, index: int, text: str, finish_reason: str | None) -> JSON: ...


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the API key's id and its per-key defaults."""

    api_key_id: str | None = None
    framework: str | None = None
    mode: str | None = None


@dataclass(slots=True)
class _Plan:
    body: JSON
    mode: Mode
    framework: Framework
    context: CheckContext


def sse(chunk: JSON) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


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
    def _plan(self, request: SamplingFields, caller: Caller, request_id: str) -> _Plan:
        options = request.conscience
        name = (options and options.framework) or caller.framework or self._settings.framework
        framework = self._frameworks.get(name)
        if framework is None:
            raise APIError(
                400,
                f"Unknown conscience framework {name!r}; available: {', '.join(sorted(self._frameworks))}.",
                param="conscience.framework",
            )
        mode = self._mode(options.mode if options else None, caller)
        policy_model = self._models.policy or request.model
        if not policy_model:
            raise APIError(400, "you must provide a model parameter", param="model")
        judge_model = self._models.judge
        if judge_model is None:  # never the client's choice (served_models.py)
            raise APIError(
                503,
                "The conscience has no judge model: set CONSCIENCE_JUDGE_MODEL (--judge-model) "
                "or CONSCIENCE_MODEL, or serve exactly one base model upstream.",
                error_type="api_error",
                code="judge_model_unknown",
            )
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
        style = self._judge_style(options.judge_style if options else None)
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
            api_key_id=caller.api_key_id,
        )
        return _Plan(body=body, mode=mode, framework=framework, context=context)

    def _mode(self, requested: Mode | None, caller: Caller) -> Mode:
        """The request's mode; asking for less checking than the key's or the server's default
        is allowed only where the operator said so."""
        default = Mode(caller.mode) if caller.mode else self._settings.mode
        if requested is None or requested is default:
            return default
        if _STRICTNESS[requested] < _STRICTNESS[default] and not self._settings.allow_weaker_mode:
            raise APIError(
                403,
                f"conscience mode {requested.value!r} is weaker than this key's {default.value!r}; "
                "the operator has not allowed lowering it (CONSCIENCE_ALLOW_WEAKER_MODE).",
                error_type="permission_error",
                param="conscience.mode",
                code="mode_not_allowed",
            )
        return requested

    def _judge_style(self, requested: JudgeStyle | None) -> JudgeStyle:
        """The request's judge style: the server's, or another the operator lets clients pick."""
        default = self._settings.judge_style
        if requested is None or requested is default:
            return default
        if requested not in self._settings.allowed_client_judge_styles:
            raise APIError(
                403,
                f"judge style {requested.value!r} is not the server's {default.value!r}, and the "
                "operator has not let clients choose it (CONSCIENCE_CLIENT_JUDGE_STYLES).",
                error_type="permission_error",
                param="conscience.judge_style",
                code="judge_style_not_allowed",
            )
        return requested

    def _summary(self, plan: _Plan, verdicts: list[dict[str, Any]]) -> JSON:
        worst = max(verdicts, key=lambda v: _SEVERITY.get(v["verdict"], 0), default=None)
        scores = [v["score"] for v in verdicts if v.get("score") is not None]
        return {
            "verdict": worst["verdict"] if worst else "unchecked",
            "score": max(scores) if scores else None,
            "framework": plan.framework.name,
            "mode": plan.mode.value,
            "repaired": any(v["repaired"] for v in verdicts),
            "refused": any(v["refused"] for v in verdicts),
            "attempts": max((v["attempts"] for v in verdicts), default=0),
            "judge_model": plan.context.policy.judge_model if plan.mode is not Mode.OFF else None,
            "request_id": plan.context.request_id,
            "choices": verdicts,
        }

    @staticmethod
    def _choice_verdicts(count: int, label: str) -> list[dict[str, Any]]:
        return [
            {"index": i, "verdict": label, "score": None, "repaired": False, "refused": False, "attempts": 0}
            for i in range(count)
        ]

    @staticmethod
    def _reviewed_verdicts(reviews: list[Review]) -> list[dict[str, Any]]:
        return [
            {
                "index": i,
                "verdict": r.verdict,
                "score": r.score,
                "repaired": r.repaired,
                "refused": r.refused,
                "attempts": r.attempts,
            }
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
    async def create(self, request: SamplingFields, caller: Caller, request_id: str) -> Response:
        plan = self._plan(request, caller, request_id)
        if request.stream:
            return await self._stream(plan)
        started = time.perf_counter()
        response = await self._surface.create(self._backend, plan.body)
        upstream_ms = self._observe_upstream(started)
        choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
        if plan.mode is Mode.OFF:
            self._pipeline.skipped(plan.context, len(choices))
            verdicts = self._choice_verdicts(len(choices), "unchecked")
        else:
            cases = self._cases(plan.body, [self._surface.choice_text(c) for c in choices])
            if plan.mode is Mode.MONITOR:
                self._pipeline.check_later(plan.context, cases, upstream_ms=upstream_ms)
                verdicts = self._choice_verdicts(len(choices), PENDING)
            else:
                reviews = await self._pipeline.check(plan.context, cases, upstream_ms=upstream_ms)
                for choice, review in zip(choices, reviews, strict=True):
                    if review.repaired or review.refused:
                        finish = "content_filter" if review.refused else "stop"
                        self._surface.rewrite_choice(choice, review.final_text, finish)
                verdicts = self._reviewed_verdicts(reviews)
        summary = self._summary(plan, verdicts)
        response["conscience"] = summary
        self._metrics.stage_seconds.labels("total").observe(time.perf_counter() - started)
        return Response(
            orjson.dumps(response), media_type="application/json", headers=self._headers(summary)
        )

    # --- streaming -------------------------------------------------------------------------
    async def _stream(self, plan: _Plan) -> Response:
        started = time.perf_counter()
        chunks = self._surface.stream(self._backend, plan.body)
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
        label = PENDING if plan.mode is Mode.MONITOR else "unchecked"
        summary = self._summary(plan, self._choice_verdicts(plan.body.get("n", 1), label))
        return StreamingResponse(
            self._pass_through(plan, first, chunks, summary, started),
            media_type="text/event-stream",
            headers=self._headers(summary),
        )

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
        changed = {i: r for i, r in zip(indices, reviews, strict=True) if r.repaired or r.refused}
        summary = self._summary(plan, self._reviewed_verdicts(reviews))
        return self._replay(buffered, changed, summary), summary

    async def _replay(
        self, buffered: list[JSON], changed: dict[int, Review], summary: JSON
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
        for index, review in sorted(changed.items()):
            finish = "content_filter" if review.refused else "stop"
            out.append(self._surface.text_chunk(head, index, review.final_text, None))
            out.append(self._surface.text_chunk(head, index, "", finish))
        out.extend(usage_chunks)
        if not out:
            out.append({**head, "choices": []})
        out[-1] = {**out[-1], "conscience": summary}
        for chunk in out:
            yield sse(chunk)
        yield _SSE_DONE
