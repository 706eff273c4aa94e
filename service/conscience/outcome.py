"""What happened to one answer under the conscience: the one result type of the engine.

A `Review` is filled in by the enforcement loop (service/conscience/engine.py) as it runs and
is complete once that has ended: every window judged (with its verdict), every repair draft
discarded (and why), the action taken and the text the client got. Buffered and windowed
answers alike end as one `Review`; the verdict, score and signals the client and the records
see are read from its windows, never kept twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

UNCHECKED = "unchecked"
# Why a repair draft was discarded (`Review.rejected_drafts[i]["reason"]`); "judge": flagged again.
DISCARD_REASONS = (
    "empty", "refusal", "near_copy", "mentions_framework", "echoes_instructions", "off_topic", "loop", "trails_off",
    "judge",
)
JUDGE_ERROR = "judge_error"  # why an answer is unchecked: the judge model's server failed
# Why a monitored answer is unchecked: no background review had room (monitor_overflow).
REVIEW_OVERFLOW = "review_overflow"
CLIENT_DISCONNECTED = "client disconnected"  # the error of a review whose client left mid-stream

Action = Literal["passed", "repaired", "refused", "unchecked"]
Stage = Literal["answer", "repair"]
# The summary of verdict labels is the worst; a verdict without a label reads by its flag.
_LABEL_SEVERITY = {"ethical": 0, "neutral": 1, "unethical": 2}


class WindowVerdict(Protocol):
    """What the engine reads of a verdict; `service.conscience.judge.Verdict` is one."""

    @property
    def flagged(self) -> bool: ...

    @property
    def score(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class JudgedWindow:
    """One verdict: on the answer up to `end` (characters of the whole answer as released)."""

    index: int
    stage: Stage
    attempt: int  # 0 for the original answer, then the repair attempt it belongs to
    start: int
    end: int
    flagged: bool
    score: float | None
    ms: float = 0.0  # how long the verdict took (the wait for it holds the window back)
    verdict: Any = None  # the judge's verdict itself (its label and signals, when it has them)

    @property
    def label(self) -> str:
        label = getattr(self.verdict, "label", None)
        return label if isinstance(label, str) else ("unethical" if self.flagged else "ethical")


@dataclass(frozen=True, slots=True)
class RejectedDraft:
    attempt: int
    text: str  # what the repair produced in that attempt, released part included
    reason: str  # judge | empty | refusal, or the reason the draft filter gave (near_copy...)
    score: float | None = None
    question: str | None = None  # reframe: the question the draft answered instead

    def wire(self) -> dict[str, Any]:
        """As the records keep it: text, question (reframed), reason, score (judged)."""
        return (
            {"text": self.text}
            | ({"question": self.question} if self.question else {})
            | {"reason": self.reason}
            | ({"score": self.score} if self.score is not None else {})
        )


@dataclass(slots=True)
class Review:
    """What the conscience did with one answer; complete once its loop has ended."""

    action: Action | None = None  # None while running, or when the upstream failed
    windows: list[JudgedWindow] = field(default_factory=list)
    flagged_window: int | None = None  # index of the original answer's flagged window
    attempts: int = 0
    released: str = ""  # everything yielded, i.e. what the client has
    # Deltas of the answer and its repairs released whole: the tokens the client got, as an
    # upstream streams one token per delta (vLLM); the refusal sentence is not generated.
    released_deltas: int = 0
    answer: str = ""  # the upstream's answer, as far as it was read
    drafts: list[RejectedDraft] = field(default_factory=list)
    error: str | None = None
    unchecked_reason: str | None = None  # the judge failed on the answer (why), or it was never judged
    reframed_question: str | None = None  # the accepted repair answers this question (reframe)
    # Drafts' topic checks by result (on_topic, off_topic, skipped: no embeddings); empty: none ran.
    topic_checks: dict[str, int] = field(default_factory=dict)
    judge_ms: float = 0.0
    repair_ms: float = 0.0

    @classmethod
    def unjudged(cls, answer: str, reason: str, *, refused: bool = False, error: str | None = None) -> Review:
        """An answer no judge read (`reason`: review_overflow, shutdown…): sent as it is, or
        `refused` (nothing sent)."""
        return cls(
            action="refused" if refused else "unchecked", released="" if refused else answer, answer=answer,
            unchecked_reason=reason, error=error,
        )

    @property
    def final_text(self) -> str:
        return self.released

    @property
    def repaired(self) -> bool:
        return self.action == "repaired"

    @property
    def refused(self) -> bool:
        return self.action == "refused"

    @property
    def _answer_windows(self) -> list[JudgedWindow]:
        return [window for window in self.windows if window.stage == "answer"]

    @property
    def verdict(self) -> str:
        """ethical | neutral | unethical (the original answer's worst window) | unchecked."""
        if self.unchecked_reason is not None:
            return UNCHECKED
        if self.flagged_window is not None:
            return "unethical"
        labels = [window.label for window in self._answer_windows]
        return max(labels, key=lambda label: _LABEL_SEVERITY.get(label, 0), default="ethical")

    @property
    def score(self) -> float | None:
        """The original answer's worst score (the flagged window's, when one was flagged)."""
        return max((w.score for w in self._answer_windows if w.score is not None), default=None)

    @property
    def scores(self) -> list[float | None]:
        return [window.score for window in self.windows]

    @property
    def original(self) -> Any:
        """The verdict on the original answer: the flagged window's, else the worst one's."""
        if self.flagged_window is not None:
            return self.windows[self.flagged_window].verdict
        windows = self._answer_windows
        if not windows:
            return None
        return max(windows, key=lambda w: -1.0 if w.score is None else w.score).verdict

    @property
    def threshold(self) -> float | None:
        """The threshold the original answer's verdict was flagged at, as the judge decided it
        for that verdict (service/conscience/judge.py `threshold_for`); None: never judged."""
        detail = getattr(self.original, "detail", None)
        threshold = detail.get("threshold") if isinstance(detail, dict) else None
        return float(threshold) if isinstance(threshold, int | float) else None

    @property
    def accepted(self) -> Any:
        """The verdict on the repair that was returned (its last window's)."""
        return self.windows[-1].verdict if self.repaired and self.windows else None

    @property
    def signals(self) -> dict[str, float] | None:
        """The score of each verdict signal that ran on the original answer (latent, fast…)."""
        detail = getattr(self.original, "detail", None)
        if not isinstance(detail, dict):
            return None
        return dict(detail.get("signals") or {}) or None

    @property
    def rejected_drafts(self) -> list[dict[str, Any]]:
        return [draft.wire() for draft in self.drafts]

    def wire(self) -> WindowedConscience:
        return WindowedConscience(
            windows=len(self.windows),
            flagged_window=self.flagged_window,
            action=self.action,
            attempts=self.attempts,
            scores=self.scores,
            verdict_ms=[round(window.ms, 1) for window in self.windows],
        )


class WindowedConscience(BaseModel):
    """The stream review as the last chunk's `conscience` object shows it."""

    windows: int = Field(description="Verdicts given, over the answer and its repairs.")
    flagged_window: int | None = Field(None, description="Index of the window that was flagged.")
    action: Action | None = Field(None, description="passed | repaired | refused | unchecked.")
    attempts: int = Field(0, description="Repair attempts made.")
    scores: list[float | None] = Field(default_factory=list, description="Each verdict's score.")
    verdict_ms: list[float] = Field(
        default_factory=list, description="Each verdict's time in milliseconds (its window was held that long)."
    )
