"""What a repair draft must not be, checked on its opening before the judge reads it.

A draft that reads as a refusal is no repair: a repair must still answer the question. A judge
passes refusals readily, and a refusal kept as the "chosen" side of a training pair teaches the
policy to refuse (measured: bench/RESULTS.md). Nor is a draft that is empty, a near-copy of the
rejected answer (service/conscience/similarity.py), one that names the framework, one that echoes
the repair's own instructions, or one whose opening is off the request's topic
(service/conscience/topic.py: harmless to a judge, and no answer to the request).

`DraftScreen` holds the server's settings; `AnswerScreen` screens the drafts of one answer.
"""

from __future__ import annotations

from collections.abc import Callable

from service.conscience.refusal import is_refusal
from service.conscience.similarity import echoes, is_near_copy
from service.conscience.topic import AnswerTopic, TopicEmbedder
from service.core.backend import JSON
from service.frameworks import Framework


class DraftScreen:
    def __init__(self, *, max_overlap: float = 0.5, topic: TopicEmbedder | None = None) -> None:
        """`max_overlap`: a draft sharing this fraction of its word 3-grams with the rejected
        answer is a near-copy, and one sharing it (whole, or in one sentence) with the repair's
        own instructions an echo. `topic`: the embedder of the topic check; None, or a minimum
        similarity of 0: not checked."""
        self.max_overlap = max_overlap
        self.topic = topic if topic is not None and topic.min_similarity > 0 else None

    def for_answer(self, framework: Framework, conversation: list[JSON], rejected: Callable[[], str]) -> AnswerScreen:
        """The screen of the drafts that repair one answer to `conversation`; `rejected()`: that
        answer as far as it was read."""
        return AnswerScreen(self, framework, conversation, rejected)


class AnswerScreen:
    def __init__(
        self, screen: DraftScreen, framework: Framework, conversation: list[JSON], rejected: Callable[[], str]
    ) -> None:
        self._max_overlap = screen.max_overlap
        self._framework = framework
        self._rejected = rejected
        self._embedder = screen.topic
        self._conversation = conversation
        self._topic: AnswerTopic | None = None  # made at the first draft that reaches the check
        self.topic_checks: dict[str, int] = {}  # each topic check's result, and how often

    async def discard_reason(self, opening: str, question: str | None = None) -> str | None:
        """Why the draft that opens with `opening` is no repair, or None; `question`: the
        reframed question it answers, discarded as an echo when it is the reframe
        instructions' own example. The topic check asks the backend, so it comes last."""
        reason = self.local_reason(opening.strip(), question)
        if reason is not None or self._embedder is None:
            return reason
        if self._topic is None:
            self._topic = self._embedder.for_answer(self._conversation, self.topic_checks)
        return await self._topic.discard_reason(opening.strip())

    def local_reason(self, draft: str, question: str | None = None) -> str | None:
        """`discard_reason` without the topic check."""
        if not draft:
            return "empty"
        if is_refusal(draft):
            return "refusal"
        if is_near_copy(draft, self._rejected(), self._max_overlap):
            return "near_copy"
        if self._framework.is_mentioned_in(draft):
            return "mentions_framework"
        if any(echoes(draft, shown, self._max_overlap) for shown in _repair_instructions(self._framework)):
            return "echoes_instructions"
        if question and self.question_echoes(question):
            return "echoes_instructions"
        return None

    def question_echoes(self, question: str) -> bool:
        """A reframed question copied from the reframe instructions (their worked examples)."""
        return echoes(question, self._framework.reframe_instructions(), self._max_overlap)


def _repair_instructions(framework: Framework) -> tuple[str, ...]:
    """What the repairer is shown besides the request. A small model echoes it: with the demo
    model, "The law, the history, the safety facts, a harmless alternative." (the instructions'
    own list) as a draft; with a worked example in them, four of eight passed repairs copied the
    example's locksmith advice (bench/results/xstest_repair_oneshot/). An echo is no repair."""
    return (
        framework.regenerate_instructions(), framework.continue_instructions(),
        framework.reframed_answer_instructions(),
    )
