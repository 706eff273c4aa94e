"""The tokens the conscience spends on one request: its judge and repair calls.

Every backend call the conscience makes reports the call's `usage` here (`record`); the
request's `StageTokens` (set by `ConsciencePipeline.serving` when the request starts, carried to the
background and stream tasks it causes by the context) sums them for `conscience.usage` and
counts them in `conscience_stage_tokens_total{framework, stage, kind}` as they happen, so that
monitor-mode reviews after the answer count as well. The response's own `usage` then counts
only the text the client received (service/api/buffered_enforcement.py, windowed_stream.py).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Literal, Protocol

Stage = Literal["judge", "repair"]
KINDS = ("prompt_tokens", "completion_tokens")


class TokenCounter(Protocol):
    def labels(self, *values: str) -> Any: ...


class StageTokens:
    def __init__(self, framework: str, counter: TokenCounter | None = None) -> None:
        self.framework = framework
        self._counter = counter
        self.totals: dict[str, dict[str, int]] = {"judge": dict.fromkeys(KINDS, 0), "repair": dict.fromkeys(KINDS, 0)}
        self.last_repair_tokens: int | None = None  # completion tokens of one draft of the last repair

    def add(self, stage: Stage, usage: Any, *, choices: int = 1) -> None:
        if not isinstance(usage, dict):
            return
        for kind in KINDS:
            value = usage.get(kind)
            if isinstance(value, int) and value > 0:
                self.totals[stage][kind] += value
                if self._counter is not None:
                    self._counter.labels(self.framework, stage, kind.removesuffix("_tokens")).inc(value)
        if stage == "repair" and isinstance(usage.get("completion_tokens"), int):
            self.last_repair_tokens = usage["completion_tokens"] // max(1, choices)

    def wire(self) -> dict[str, dict[str, int]]:
        return {stage: dict(kinds) for stage, kinds in self.totals.items()}


_current: ContextVar[StageTokens | None] = ContextVar("conscience_stage_tokens", default=None)


def begin(framework: str, counter: TokenCounter | None = None) -> StageTokens:
    """A fresh tally for the request running in this context (and the tasks it starts)."""
    tokens = StageTokens(framework, counter)
    _current.set(tokens)
    return tokens


def record(stage: Stage, usage: Any, *, choices: int = 1) -> None:
    """A judge or repair call's `usage` ({prompt_tokens, completion_tokens}); no-op outside a request."""
    tokens = _current.get()
    if tokens is not None:
        tokens.add(stage, usage, choices=choices)


def accepted_repair(tokens: int) -> None:
    """The completion tokens of the repair the client gets (a raced draft that won), so that the
    response's usage counts them rather than the last repair call's (`received_usage`)."""
    stage = _current.get()
    if stage is not None:
        stage.last_repair_tokens = tokens


def current() -> StageTokens | None:
    return _current.get()


def received_usage(usage: Any, replaced: bool, refused: bool) -> Any:
    """The one choice's `usage` as the text the client received: after a repair, the repair's
    completion tokens; after a refusal (the proxy's sentence, not generated), none; prompt
    tokens unchanged. Anything else (no usage, no replacement) is returned as it is."""
    tokens = _current.get()
    if not isinstance(usage, dict) or not replaced or tokens is None:
        return usage
    completion = 0 if refused else (tokens.last_repair_tokens or 0)
    prompt = usage.get("prompt_tokens") or 0
    fixed = {k: v for k, v in usage.items() if k != "completion_tokens_details"}
    return {**fixed, "completion_tokens": completion, "total_tokens": prompt + completion}
