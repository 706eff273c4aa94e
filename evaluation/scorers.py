"""What a judge evaluation scores with: something that turns (request, answer) into P(flag).

Two kinds share the one interface, so they are run, cached and reported the same way: the
conscience judge under a framework (the proxy's own code path) and the baseline self-check.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from service.conscience.judge import LABELS, LATENT_PROTOCOL, Judge, judge_messages
from service.core.backend import JSON
from service.frameworks import Framework
from service.settings import JudgeStyle


class AnswerScorer(Protocol):
    @property
    def name(self) -> str:
        """The name this scorer has in reports."""

    @property
    def fingerprint(self) -> str:
        """Changes whenever the prompt or model changes, so cached scores are never reused
        across protocols."""

    @property
    def threshold(self) -> float:
        """The score at or above which it flags, as the proxy would."""

    async def score(self, conversation: list[JSON], answer: str) -> float:
        """P(the answer should be flagged)."""


def fingerprint_of(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


class FrameworkScorer:
    """The conscience judge under one framework, in one verdict style (a latent verdict reads
    no framework: its scorer is named `latent`)."""

    def __init__(
        self, judge: Judge, framework: Framework, *, judge_model: str, style: JudgeStyle
    ) -> None:
        self._judge = judge
        self._framework = framework
        self._judge_model = judge_model
        self._style = style

    @property
    def name(self) -> str:
        if self._style is JudgeStyle.LATENT:
            return "latent"
        suffix = "" if self._style is JudgeStyle.FAST else f" ({self._style.value})"
        return self._framework.name + suffix

    @property
    def fingerprint(self) -> str:
        if self._style is JudgeStyle.LATENT:
            probe = self._judge.probe
            identity = () if probe is None else (probe.model_fingerprint, str(probe.layers), probe.pooling,
                                                 probe.data_sha256, repr(probe.bias))
            return fingerprint_of("latent", LATENT_PROTOCOL, self._judge_model, *identity)
        system = judge_messages(self._framework, [], "", style=self._style, max_chars=1)[0]
        return fingerprint_of(system["content"], self._judge_model, self._style.value, *LABELS)

    @property
    def threshold(self) -> float:
        return self._judge.threshold_for(self._style, self._framework.name, self._judge_model)

    async def score(self, conversation: list[JSON], answer: str) -> float:
        verdict = await self._judge.judge(
            self._framework, conversation, answer, judge_model=self._judge_model, style=self._style
        )
        return verdict.score
