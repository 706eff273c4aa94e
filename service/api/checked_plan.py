"""What every mode of a checked surface shares: the surface's shape (`Surface`), the checked
answer as data (`CheckedAnswer`, `CheckedStream`), and the `conscience` summary and headers
built from the choices' verdicts.

service/api/checked_serving.py plans a request and hands it to the route its plan names
(`Route`): service/api/pass_through.py (off, monitor), service/api/buffered_enforcement.py
(enforce, judged once the answer is whole) or service/api/windowed_stream.py (enforce, judged
window by window); service/api/framing.py frames their data as JSON or SSE.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from service.api.conscience_protocol import (
    ChoiceConscience,
    ConscienceResult,
    ConscienceUsage,
    ToolCallConscience,
)
from service.conscience.outcome import Review
from service.conscience.planning import Plan
from service.conscience.policy import worst_verdict
from service.conscience.tool_calls import Replacement
from service.conscience.usage import current as current_usage
from service.core.backend import JSON, Backend
from service.metrics import Metrics
from service.settings import Mode


class Surface(Protocol):
    endpoint: Literal["chat", "completions"]

    def validate(self, body: JSON) -> None:
        """Raise APIError for input the conscience cannot judge (checked before any call)."""
    def prompt_count(self, body: JSON) -> int:
        """How many prompts the request sends (a batch is answered `n` times for each)."""

    async def create(self, backend: Backend, body: JSON) -> JSON: ...
    def stream(self, backend: Backend, body: JSON) -> AsyncIterator[JSON]: ...
    def conversations(self, body: JSON, choice_count: int) -> list[list[JSON]]: ...
    def choice_text(self, choice: JSON) -> str: ...
    def forwarded(self, choice: JSON, body: JSON) -> JSON:
        """A choice (or a stream chunk's) as the client may get it while the conscience is on:
        what `choice_text` reads and metadata, nothing else (service/api/forwarded_fields.py)."""
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
class CheckedAnswer:
    """A checked completion (its `conscience` object in), and the headers it goes out with."""

    body: JSON
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class CheckedStream:
    """A checked answer's chunks as they are released — the last carries the `conscience`
    object; a failed stream ends with an OpenAI error object — and the headers it goes out
    with (decided before the first chunk)."""

    chunks: AsyncIterator[JSON]
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class OpenedStream:
    """An upstream stream already opened (asked at `started`, perf_counter) and partly read."""

    chunks: AsyncIterator[JSON]
    started: float


class Route(Protocol):
    """One way a planned request is answered (`Plan.route` names it)."""

    async def respond(self, plan: Plan, opened: OpenedStream | None = None) -> CheckedAnswer | CheckedStream:
        """The checked answer of `plan`; `opened`: its upstream stream, already opened by a route
        that handed the request on (the rest of the request's is this route's)."""


async def forwarded_chunks(surface: Surface, chunks: AsyncIterator[JSON], body: JSON) -> AsyncIterator[JSON]:
    """A stream's chunks with only what the judge reads (`Surface.forwarded`)."""
    async for chunk in chunks:
        if isinstance(chunk.get("choices"), list):
            chunk = {**chunk, "choices": [surface.forwarded(c, body) for c in chunk["choices"]]}
        yield chunk


def merged_choices(surface: Surface, chunks: Iterable[JSON]) -> tuple[list[int], list[JSON]]:
    """A stream's choice indices, in order, and each choice merged from its deltas."""
    deltas: dict[int, list[JSON]] = {}
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            deltas.setdefault(choice.get("index", 0), []).append(choice)
    indices = sorted(deltas)
    return indices, [surface.merge_deltas(deltas[i]) for i in indices]


def conscience_summary(plan: Plan, verdicts: list[ChoiceConscience]) -> JSON:
    """The `conscience` object of a response (or its last chunk) from its choices' verdicts."""
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
        usage=_conscience_usage(plan),
    ).model_dump(mode="json")


def _conscience_usage(plan: Plan) -> ConscienceUsage | None:
    """Enforce mode: what the judge and repairer spent before the answer (monitor's come later)."""
    tokens = current_usage()
    if plan.mode is not Mode.ENFORCE or tokens is None:
        return None
    return ConscienceUsage.model_validate(tokens.wire())


def choice_verdicts(count: int, label: str) -> list[ChoiceConscience]:
    return [ChoiceConscience(index=i, verdict=label) for i in range(count)]


def reviewed_verdicts(
    reviews: list[Review], calls: list[list[JSON]] | None = None, replaced: list[Replacement | None] | None = None
) -> list[ChoiceConscience]:
    """Each choice's verdict; `calls[i]`: the tools choice i called, and `replaced[i]`: what
    replaced it — the verdict then names each tool and what became of its call (a withheld
    call counts as refused)."""
    verdicts = []
    for i, r in enumerate(reviews):
        verdict = ChoiceConscience(
            index=i, verdict=r.verdict, score=r.score, signals=r.signals, repaired=r.repaired,
            refused=r.refused, attempts=r.attempts,
        )
        choice_calls = calls[i] if calls else []
        if choice_calls:
            replacement = replaced[i] if replaced else None
            action = replacement.call_action if replacement is not None else None
            verdict.tool_calls = [
                ToolCallConscience(name=str(call.get("name") or "?"), verdict=r.verdict, action=action or "passed")
                for call in choice_calls
            ]
            if action == "withheld":
                verdict.repaired, verdict.refused = False, True
        verdicts.append(verdict)
    return verdicts


def windowed_summary(plan: Plan, reviews: list[Review]) -> JSON:
    """The `conscience` object of a windowed stream: each choice's verdict with its `stream`
    summary (also the object's own for one choice)."""
    verdicts = reviewed_verdicts(reviews)
    for verdict, review in zip(verdicts, reviews, strict=True):
        verdict.stream = review.wire()
    summary = conscience_summary(plan, verdicts)
    if len(reviews) == 1:
        summary["stream"] = reviews[0].wire().model_dump(mode="json")
    return summary


def response_headers(summary: JSON) -> dict[str, str]:
    return {
        "X-Conscience-Verdict": summary["verdict"],
        "X-Conscience-Repaired": "true" if summary["repaired"] else "false",
        "X-Request-Id": summary["request_id"],
    }


def observe_upstream(metrics: Metrics, started: float) -> float:
    """The upstream stage's time since `started` (perf_counter), observed; in milliseconds."""
    elapsed = time.perf_counter() - started
    metrics.stage_seconds.labels("upstream").observe(elapsed)
    return elapsed * 1000.0


def _max_signals(per_choice: Iterable[dict[str, float] | None]) -> dict[str, float] | None:
    """Each verdict signal's highest score over the choices (None: no signal ran)."""
    merged: dict[str, float] = {}
    for signals in per_choice:
        for name, score in (signals or {}).items():
            merged[name] = max(score, merged.get(name, score))
    return merged or None
