"""What a judge evaluation scores with: something that turns (request, answer) into P(flag).

Two kinds share the one interface, so they are run, cached and reported the same way: the
conscience judge under a framework (the proxy's own code path) and the baseline self-check.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from service.backends.base import JSON
from service.conscience.frameworks import Framework
from service.conscience.judge import LABELS, Judge, judge_messages
from service.settings import JudgeStyle


class AnswerScorer(Protocol):
    @property
    def name(self) -> str:
        """The name this scorer has in reports."""

    @property
    def fingerprint(self) -> str:
        """Changes whenever the prompt or model changes, so cached scores are never reused
        across protocols."""

    async def score(self, conversation: list[JSON], answer: str) -> float:
        """P(the answer should be flagged)."""


def fingerprint_of(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


class FrameworkScorer:
    """The conscience judge (fast or reasoned verdict) under one framework."""

    def __init__(
        self, judge: Judge, framework: Framework, *, judge_model: str, style: JudgeStyle
    ) -> None:
        self._judge = judge
        self._framework = framework
        self._judge_model = judge_model
        self._style = style

    @property
    def name(self) -> str:
        return self._framework.name

    @property
    def fingerprint(self) -> str:
        system = judge_messages(self._framework, [], "", style=self._style, max_chars=1)[0]
        return fingerprint_of(system["content"], self._judge_model, self._style.value, *LABELS)

    async def score(self, conversation: list[JSON], answer: str) -> float:
        verdict = await self._judge.judge(
            self._framework, conversation, answer, judge_model=self._judge_model, style=self._style
        )
        return verdict.score
