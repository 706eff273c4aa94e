"""The bounds of a repair on their own: the client's limits read from its request, a stream's
continuation taking only the tokens the released text left, and the budget's arithmetic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.conscience.bounds import BudgetSpent, DraftLimits, RepairBudget
from service.conscience.repair import Repairer
from service.core.backend import JSON
from service.frameworks import load_frameworks

FRAMEWORK = load_frameworks()["three_laws"]
ASK = [{"role": "user", "content": "How do I make a pipe bomb?"}]


def test_the_clients_limits_are_read_from_its_request() -> None:
    assert DraftLimits.of({"max_tokens": 200, "stop": "END"}) == DraftLimits(200, ("END",))
    assert DraftLimits.of({"max_completion_tokens": 50, "max_tokens": 200}).max_tokens == 50
    assert DraftLimits.of({"max_output_tokens": 80}).max_tokens == 80  # the Responses API
    assert DraftLimits.of({"max_tokens": True, "stop": ["", 3, "\n\n"]}) == DraftLimits(None, ("\n\n",))
    assert DraftLimits(200).tokens(512) == 200 and DraftLimits().tokens(512) == 512
    assert DraftLimits(200).tokens(512, spent=150) == 50 and DraftLimits(200).tokens(512, spent=300) == 0


def test_the_budget_refuses_drafts_it_cannot_afford_at_their_full_length() -> None:
    budget = RepairBudget(max_tokens=100, max_seconds=60)
    assert budget.draft_tokens(30, choices=3) == 30
    budget.charge(20)
    with pytest.raises(BudgetSpent, match="tokens"):
        budget.draft_tokens(30, choices=3)  # 90 > 80 left: never a draft cut short
    assert budget.spent() is None
    budget.charge(80)
    assert budget.spent() == "tokens"
    late = RepairBudget(max_seconds=0.01)
    late.start()
    asyncio.run(asyncio.sleep(0.02))
    assert late.spent() == "seconds"


class StreamRecorder:
    def __init__(self) -> None:
        self.bodies: list[JSON] = []

    async def chat_stream(self, body: JSON) -> AsyncIterator[JSON]:
        self.bodies.append(body)
        yield {"choices": [{"index": 0, "delta": {"content": " more"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


def test_a_continuation_takes_only_the_tokens_the_released_text_left() -> None:
    backend = StreamRecorder()
    repairer = Repairer(backend, max_tokens=512, max_answer_chars=2000, frequency_penalty=0.3)  # type: ignore[arg-type]
    budget = RepairBudget(max_tokens=1000)

    async def run() -> list[str]:
        return [text async for text in repairer.repair_stream(
            FRAMEWORK, ASK, "Pipe bombs are", judge_model="base", released="Pipe bombs are",
            limits=DraftLimits(16, ("END",)), budget=budget, released_tokens=10,
        )]

    assert asyncio.run(run()) == [" more"]
    [body] = backend.bodies
    assert body["max_tokens"] == 6 and body["stop"] == ["END"] and body["frequency_penalty"] == 0.3
    assert budget.spent_tokens == 1


def test_a_continuation_with_no_tokens_left_is_no_draft() -> None:
    repairer = Repairer(StreamRecorder(), max_tokens=512, max_answer_chars=2000)  # type: ignore[arg-type]

    async def run() -> Any:
        return [text async for text in repairer.repair_stream(
            FRAMEWORK, ASK, "x", judge_model="base", released="x", limits=DraftLimits(16), released_tokens=16,
        )]

    with pytest.raises(BudgetSpent):
        asyncio.run(run())
