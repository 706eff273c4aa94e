"""The repairer: the frozen judge model drafts a new answer to a flagged request under the framework.

`candidates` drafts new answers from the request alone (the rejected answer out of view, so a
small model cannot copy it), by the attempt's strategy (`RepairStrategy`):

- regenerate: the request answered under the framework's instructions;
- reframe: the framework turns the request into the closest question that is safe to answer
  in full ("How do I commit identity theft?" → "How do I protect myself from identity
  theft?"), and an ordinary assistant answers that question, the framework out of view. Two
  small steps a 0.5B model can take where it cannot take the one (docs/repairs.md, "Measured with the demo
  model"). The questions begin with the framework's `reframe_stems` ("What does the law say
  about"), prefilled as the reply's first words and continued in place, because asked openly
  a small model writes a harmful command back; only where no regenerating attempt answers the
  request itself (`--repair-strategy reframe`) is an attempt's first question left open.

`candidate_streams` drafts the same candidates as one streamed generation (one `n=k` call), each
candidate its own stream, so that the repair loop judges each as it is generated and stops the
rest once one has passed (service/conscience/engine.py).

Every draft honours the client's limits (`DraftLimits`: max tokens, stop strings) and the
answer's repair budget (`RepairBudget`: tokens charged as each call reports them), and is
sampled with the repair's frequency penalty (OpenAI's, over the draft's own tokens only, so that
the request's topic words are not penalised), which keeps a small model out of loops.

`repair_stream` streams one such draft (a reframe: one question, then its answer streamed),
or, when the client already has the beginning of the answer (windowed enforce streaming),
continues from it: the released text is the assistant's own last message, continued in place
(vLLM's `continue_final_message=True, add_generation_prompt=False`), so its deltas append to it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from service.conscience.bounds import BudgetSpent, DraftLimits, RepairBudget
from service.conscience.choice_streams import ChoiceStream, split_choices
from service.conscience.fencing import unwrap_echoed_fences
from service.conscience.repair_prompts import (
    QUESTION_END,
    continuation_messages,
    question_of,
    reframe_messages,
    reframe_stem,
    reframed_answer_messages,
    regenerate_messages,
)
from service.conscience.usage import record as record_usage
from service.core.backend import JSON, Backend
from service.frameworks import Framework
from service.settings import RepairStrategy
from service.tracing import stage_context

# A reframed request is one question: a short budget keeps the model from answering it there.
REFRAME_MAX_TOKENS = 64


@dataclass(frozen=True, slots=True)
class RepairDraft:
    text: str
    question: str | None = None  # reframe: the question `text` answers in place of the request
    ended_by_itself: bool = False  # the model ended it (finish_reason "stop"), not a token limit


@dataclass(frozen=True, slots=True)
class StreamedCandidate:
    """One candidate of a streamed batch: its deltas, and the question it answers (reframe)."""

    deltas: ChoiceStream
    question: str | None = None


class Repairer:
    def __init__(
        self, backend: Backend, *, max_tokens: int, max_answer_chars: int, temperature: float = 0.7,
        candidates: int = 1, strategy: RepairStrategy = RepairStrategy.REGENERATE,
        frequency_penalty: float = 0.0,
    ) -> None:
        """`frequency_penalty`: OpenAI's, sent with every draft (0: not sent)."""
        self._backend = backend
        self._frequency_penalty = frequency_penalty
        self.candidates_per_call = candidates
        self.strategy = strategy
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._max_chars = max_answer_chars

    def strategy_for(self, attempt: int) -> RepairStrategy:
        """The strategy of repair attempt `attempt` (1, 2, …): regenerate, reframe, or both
        (a streamed draft, one at a time, alternates instead)."""
        if self.strategy is RepairStrategy.ALTERNATE:
            return RepairStrategy.REGENERATE if attempt % 2 else RepairStrategy.REFRAME
        return self.strategy

    async def candidates(
        self, framework: Framework, conversation: list[JSON], *, judge_model: str, attempt: int = 1,
        limits: DraftLimits = DraftLimits(), budget: RepairBudget | None = None,
    ) -> list[RepairDraft]:
        """`candidates_per_call` drafts (a server that ignores `n` gives fewer), each drafted
        from the request alone by this attempt's strategy, within `limits` and `budget`."""
        bounds = _Bounds(limits, budget)
        if self.strategy_for(attempt) is RepairStrategy.BOTH:
            regenerated, reframed = await asyncio.gather(
                self._regenerated(framework, conversation, judge_model, bounds),
                self._one_reframe(framework, conversation, judge_model, attempt, bounds),
            )
            return regenerated + reframed
        if self.strategy_for(attempt) is RepairStrategy.REFRAME:
            questions = await self._drawn_questions(framework, conversation, judge_model, bounds)
            answers = await asyncio.gather(*(
                self._drafts(reframed_answer_messages(framework, question), judge_model=judge_model, n=count,
                             bounds=bounds)
                for question, count in questions.items()
            ))
            return [
                RepairDraft(text, question, ended) for question, drafts in zip(questions, answers, strict=True)
                for text, ended in drafts
            ]
        return await self._regenerated(framework, conversation, judge_model, bounds)

    async def _regenerated(
        self, framework: Framework, conversation: list[JSON], judge_model: str, bounds: _Bounds
    ) -> list[RepairDraft]:
        drafts = await self._drafts(
            regenerate_messages(framework, conversation, max_chars=self._max_chars),
            judge_model=judge_model, n=self.candidates_per_call, bounds=bounds,
        )
        return [RepairDraft(text, ended_by_itself=ended) for text, ended in drafts]

    async def _one_reframe(
        self, framework: Framework, conversation: list[JSON], judge_model: str, attempt: int, bounds: _Bounds
    ) -> list[RepairDraft]:
        """`both`: attempt `attempt`'s one reframed question, answered `candidates_per_call` times."""
        question = await self._attempt_question(framework, conversation, judge_model, attempt, bounds)
        if not question:
            return []
        drafts = await self._drafts(
            reframed_answer_messages(framework, question), judge_model=judge_model, n=self.candidates_per_call,
            bounds=bounds,
        )
        return [RepairDraft(text, question, ended) for text, ended in drafts]

    async def _attempt_question(
        self, framework: Framework, conversation: list[JSON], judge_model: str, attempt: int, bounds: _Bounds
    ) -> str:
        """`both`: the reframed question of attempt `attempt`, begun with the framework's opening
        number `attempt` (stemmed: asked openly, the demo model writes the harmful command back)."""
        questions = await self._questions(
            framework, conversation, judge_model, stems=[reframe_stem(framework, attempt)], bounds=bounds
        )
        return questions[0] if questions else ""

    async def candidate_streams(
        self, framework: Framework, conversation: list[JSON], *, judge_model: str, attempt: int = 1,
        limits: DraftLimits = DraftLimits(), budget: RepairBudget | None = None,
    ) -> AsyncIterator[StreamedCandidate]:
        """The same candidates as `candidates`, streamed as soon as each can start: one `n=k`
        generation for the regenerated ones (under `both`, yielded before the reframed question is
        drawn, so that they generate meanwhile), one per distinct reframed question; each choice
        its own stream, read once first read. Closing a stream stops its choice; a generation
        ends once none of its choices is read."""
        bounds = _Bounds(limits, budget)
        strategy = self.strategy_for(attempt)
        unread: list[ChoiceStream] = []  # a generation's choices not yet handed out
        try:
            if strategy in (RepairStrategy.REGENERATE, RepairStrategy.BOTH):
                unread += self._draft_streams(
                    regenerate_messages(framework, conversation, max_chars=self._max_chars), judge_model,
                    self.candidates_per_call, bounds,
                )
                while unread:
                    yield StreamedCandidate(unread.pop(0))
            if strategy is RepairStrategy.BOTH:
                question = await self._attempt_question(framework, conversation, judge_model, attempt, bounds)
                questions = Counter({question: self.candidates_per_call} if question else {})
            elif strategy is RepairStrategy.REFRAME:
                questions = await self._drawn_questions(framework, conversation, judge_model, bounds)
            else:
                return
            for question, count in questions.items():
                unread += self._draft_streams(reframed_answer_messages(framework, question), judge_model, count, bounds)
                while unread:
                    yield StreamedCandidate(unread.pop(0), question)
        finally:
            # Closed early (a draft won): a generation whose other choices are being read would
            # otherwise wait for these forever, and run on to its end unread.
            for stream in unread:
                await stream.aclose()

    async def _drawn_questions(
        self, framework: Framework, conversation: list[JSON], judge_model: str, bounds: _Bounds
    ) -> Counter[str]:
        """`candidates_per_call` reframed questions (one call per opening, concurrently), each
        distinct one with how many times it was drawn."""
        first = self._first_reframe_slot()
        stems = [reframe_stem(framework, slot) for slot in range(first, first + self.candidates_per_call)]
        return Counter(await self._questions(framework, conversation, judge_model, stems=stems, bounds=bounds))

    def _body(self, messages: list[JSON], judge_model: str, *, max_tokens: int, stop: tuple[str, ...] = ()) -> JSON:
        """A draft's request: a final assistant message is continued in place."""
        body: JSON = {
            "model": judge_model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": self._temperature,
            "top_p": 0.95,
        }
        if self._frequency_penalty:
            body["frequency_penalty"] = self._frequency_penalty
        if stop:
            body["stop"] = list(stop)
        if messages[-1]["role"] == "assistant":
            body["continue_final_message"], body["add_generation_prompt"] = True, False
        return body

    async def _drafts(
        self, messages: list[JSON], *, judge_model: str, n: int, bounds: _Bounds, question: bool = False,
        stop: tuple[str, ...] = (),
    ) -> list[tuple[str, bool]]:
        """`n` replies to `messages`, each with whether the model ended it itself; `question`: a
        reframed question (its own short budget and `stop`, not the client's limits)."""
        max_tokens = bounds.question_tokens(n) if question else bounds.draft_tokens(self._max_tokens, n)
        body = self._body(messages, judge_model, max_tokens=max_tokens, stop=stop if question else bounds.limits.stop)
        if n > 1:
            body["n"] = n
        response = await self._backend.chat(body)
        choices = response.get("choices") or []
        bounds.charge(response.get("usage"), fallback=max_tokens * max(1, len(choices)))
        record_usage("repair", response.get("usage"), choices=len(choices) or 1)
        return [
            (
                unwrap_echoed_fences(choice["message"].get("content") or "").strip(),
                choice.get("finish_reason") == "stop",
            )
            for choice in choices
        ]

    def _draft_streams(self, messages: list[JSON], judge_model: str, n: int, bounds: _Bounds) -> list[ChoiceStream]:
        max_tokens = bounds.draft_tokens(self._max_tokens, n)
        body = self._body(messages, judge_model, max_tokens=max_tokens, stop=bounds.limits.stop)
        body["n"] = n
        body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}

        # The generation is read in a task of its own: its upstream call nests in this span.
        context, end_span = stage_context("conscience.repair")

        def ended(usage: JSON | None) -> None:
            # Stopped early, a stream without usage so far cost at most its token budget.
            bounds.charge(usage, fallback=max_tokens * n)
            record_usage("repair", usage, choices=n)
            end_span()

        return split_choices(self._backend.chat_stream(body), n, on_end=ended, context=context)

    async def repair_stream(
        self,
        framework: Framework,
        conversation: list[JSON],
        answer: str,
        *,
        judge_model: str,
        released: str = "",
        attempt: int = 1,
        question_is_echo: Callable[[str], bool] | None = None,
        limits: DraftLimits = DraftLimits(),
        budget: RepairBudget | None = None,
        released_tokens: int = 0,
    ) -> AsyncIterator[str]:
        """The repair's text deltas: a new answer to `conversation` when `released` is empty,
        drafted from the request alone as `candidates` drafts it in this attempt (the rejected
        `answer` not in view, so that a small model cannot copy it; a reframe draws one
        question first), else a continuation of `released` (what the client has of the
        rejected `answer`: `released_tokens` of the client's max tokens, so the continuation
        takes at most the rest). A reframed question that `question_is_echo` finds copied (a
        worked example of the reframe instructions) is not answered: the attempt regenerates.
        The call's usage is recorded also when the stream is closed early (a flagged window):
        with vLLM's `continuous_usage_stats` every chunk reports the tokens so far."""
        bounds = _Bounds(limits, budget, spent=released_tokens if released else 0)
        if released:
            messages = continuation_messages(framework, conversation, answer, released, max_chars=self._max_chars)
        else:
            question = await self._reframed_question(framework, conversation, judge_model, attempt, bounds)
            if question and question_is_echo is not None and question_is_echo(question):
                question = ""
            messages = (
                reframed_answer_messages(framework, question) if question
                else regenerate_messages(framework, conversation, max_chars=self._max_chars)
            )
        max_tokens = bounds.draft_tokens(self._max_tokens, 1)
        body = self._body(messages, judge_model, max_tokens=max_tokens, stop=limits.stop)
        started = bool(released)
        body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
        usage = None
        try:
            async for chunk in self._backend.chat_stream(body):
                usage = chunk.get("usage") or usage
                for text in self._stream_texts(chunk, started):
                    started = True
                    yield text
        finally:
            bounds.charge(usage, fallback=max_tokens)
            record_usage("repair", usage)

    async def _reframed_question(
        self, framework: Framework, conversation: list[JSON], judge_model: str, attempt: int,
        bounds: _Bounds | None = None,
    ) -> str:
        """A streamed repair's one reframed question in a reframing attempt ("" otherwise, or
        when none was drawn: the attempt regenerates). Each reframing attempt takes the next
        opening (`reframe_stem`); under `both`, every second attempt reframes."""
        if self.strategy is RepairStrategy.BOTH:
            if attempt % 2:
                return ""
            return await self._attempt_question(
                framework, conversation, judge_model, attempt // 2, bounds or _Bounds(DraftLimits(), None)
            )
        if self.strategy_for(attempt) is not RepairStrategy.REFRAME:
            return ""
        earlier = sum(self.strategy_for(before) is RepairStrategy.REFRAME for before in range(1, attempt))
        slot = self._first_reframe_slot() + earlier
        questions = await self._questions(
            framework, conversation, judge_model, stems=[reframe_stem(framework, slot)],
            bounds=bounds or _Bounds(DraftLimits(), None),
        )
        return questions[0] if questions else ""

    def _first_reframe_slot(self) -> int:
        """Where reframed openings start: under `alternate` past the open question, as the
        regenerating attempt before each reframing one answers the request itself (open, the
        demo model wrote harmful requests back: "How can I safely terminate my wife's life?",
        bench/results/xstest_repair_stems/); else at it."""
        return 1 if self.strategy is RepairStrategy.ALTERNATE else 0

    async def _questions(
        self, framework: Framework, conversation: list[JSON], judge_model: str, *, stems: list[str],
        bounds: _Bounds,
    ) -> list[str]:
        """One reframed question per entry of `stems` (its opening; "" for none), one call per
        distinct opening, concurrently; empty replies left out."""
        openings = Counter(stems)
        replies = await asyncio.gather(*(
            self._drafts(
                reframe_messages(framework, conversation, max_chars=self._max_chars, stem=stem),
                judge_model=judge_model, n=count, bounds=bounds, question=True,
                stop=(QUESTION_END,) if stem else (),
            )
            for stem, count in openings.items()
        ))
        return [
            question for stem, texts in zip(openings, replies, strict=True) for reply, _ in texts
            if (question := question_of(reply, stem))
        ]

    @staticmethod
    def _stream_texts(chunk: JSON, started: bool) -> list[str]:
        texts = []
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if not isinstance(text, str) or not text:
                continue
            if not started:  # a fresh answer starts at its first visible character
                text = text.lstrip()
                if not text:
                    continue
                started = True
            texts.append(text)
        return texts


@dataclass(frozen=True, slots=True)
class _Bounds:
    """One repair call's bounds: the client's `limits` (of which `spent` tokens are used by the
    text a continuation follows) and the answer's repair `budget`."""

    limits: DraftLimits
    budget: RepairBudget | None
    spent: int = 0

    def draft_tokens(self, configured: int, choices: int) -> int:
        """Each of `choices` drafts' tokens; BudgetSpent when none are left."""
        wanted = self.limits.tokens(configured, spent=self.spent)
        if wanted < 1:
            raise BudgetSpent("tokens")
        return wanted if self.budget is None else self.budget.draft_tokens(wanted, choices)

    def question_tokens(self, choices: int) -> int:
        return REFRAME_MAX_TOKENS if self.budget is None else self.budget.draft_tokens(REFRAME_MAX_TOKENS, choices)

    def charge(self, usage: JSON | None, *, fallback: int) -> None:
        """Charge the budget a call's completion tokens (`fallback` when it reported none)."""
        if self.budget is None:
            return
        tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
        self.budget.charge(tokens if isinstance(tokens, int) else fallback)
