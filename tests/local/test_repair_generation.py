"""The embedded engine's side of bounded repairs (issue 28): a streamed n=k generation whose
reader stops one choice (a raced draft that was flagged or lost) ends that choice at once, and
OpenAI's frequency / presence penalties keep a choice from repeating its own tokens."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.backends.local.backend import LocalBackend
from tests.local.conftest import local_settings

QUESTION = [{"role": "user", "content": "How do I bake bread at home?"}]


@pytest.fixture(scope="module")
def endless(endless_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBackend]:
    """Greedy answers that never end by themselves: every choice runs to max_tokens."""
    local = LocalBackend.from_settings(local_settings(endless_model_dir, tmp_path_factory.mktemp("cache")))
    yield local
    asyncio.run(local.aclose())


def body(backend: LocalBackend, **fields: Any) -> dict[str, Any]:
    return {"model": backend.served_base_name, "messages": QUESTION, **fields}


async def test_a_stopped_choice_ends_at_once_and_the_others_run_on(endless: LocalBackend) -> None:
    stream = endless.chat_stream(body(
        endless, n=3, max_tokens=40, temperature=1.0, seed=5,
        stream_options={"include_usage": True, "continuous_usage_stats": True},
    ))
    deltas: Counter[int] = Counter()
    usage: dict[str, int] = {}
    async with contextlib.aclosing(stream) as chunks:
        async for chunk in chunks:
            for choice in chunk["choices"]:
                deltas[choice["index"]] += 1
                if choice["index"] == 1 and deltas[1] == 3:
                    stream.stop_choice(1)
            usage = chunk.get("usage") or usage
    assert deltas[1] <= 4  # the step that read the stop was already under way, at most
    assert deltas[0] > 20 and deltas[2] > 20
    assert 40 + 40 < usage["completion_tokens"] <= 40 + 40 + 6  # choice 1: a few tokens, not 40


def most_repeated(text_tokens: list[int]) -> int:
    return Counter(text_tokens).most_common(1)[0][1]


async def test_a_frequency_penalty_keeps_a_choice_from_repeating_its_tokens(endless: LocalBackend) -> None:
    tokenizer = endless.engine.loaded.tokenizer

    async def tokens(**fields: Any) -> list[int]:
        answer = await endless.chat(body(endless, temperature=0, max_tokens=60, **fields))
        return tokenizer.encode(answer["choices"][0]["message"]["content"], add_special_tokens=False)

    plain = await tokens()
    penalised = await tokens(frequency_penalty=2.0)
    present = await tokens(presence_penalty=2.0)
    assert most_repeated(penalised) < most_repeated(plain)
    assert most_repeated(present) < most_repeated(plain)
    assert len(set(penalised)) > len(set(plain))


async def test_penalties_outside_openais_range_are_refused(endless: LocalBackend) -> None:
    from service.core.backend import BackendError

    with pytest.raises(BackendError) as refused:
        await endless.chat(body(endless, frequency_penalty=3.0))
    assert refused.value.status_code == 400 and refused.value.param == "frequency_penalty"
