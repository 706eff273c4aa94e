"""The model thread's queue: bounded (429 when full), fair (generations interleave), cancellable."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from service.backends.local.backend import LocalBackend
from service.core.backend import Overloaded
from tests.local.conftest import local_settings

LONG = 400


@contextlib.asynccontextmanager
async def local_backend(model_dir: Path, cache_dir: Path, **overrides: Any) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend.from_settings(local_settings(model_dir, cache_dir, **overrides))
    try:
        yield backend
    finally:
        await backend.aclose()


def body(backend: LocalBackend, max_tokens: int) -> dict[str, Any]:
    return {
        "model": backend.served_base_name,
        "messages": [{"role": "user", "content": "Tell me about robots and the three laws."}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }


async def finish_times(stream: AsyncIterator[dict[str, Any]]) -> tuple[float, str | None]:
    """Consume a stream as it is produced; when its last choice finished, and why."""
    finished_at, reason = 0.0, None
    async for chunk in stream:
        for choice in chunk["choices"]:
            if choice["finish_reason"]:
                finished_at, reason = time.monotonic(), choice["finish_reason"]
    return finished_at, reason


@pytest.mark.parametrize("max_concurrent", [1, 2])
async def test_a_short_request_overtakes_a_long_one_only_when_interleaved(
    endless_model_dir: Path, tmp_path: Path, max_concurrent: int
) -> None:
    async with local_backend(endless_model_dir, tmp_path, local_max_concurrent=max_concurrent) as backend:
        long_stream = backend.chat_stream(body(backend, LONG))
        first = await anext(long_stream)  # the long generation is running
        assert first["choices"][0]["delta"]["role"] == "assistant"
        long_task = asyncio.create_task(finish_times(long_stream))

        short = await backend.chat(body(backend, 4))
        short_done = time.monotonic()
        long_done, long_reason = await long_task

        assert long_reason == "length"
        assert short["choices"][0]["finish_reason"] == "length"
        if max_concurrent == 1:
            assert short_done > long_done  # first come, first served
        else:
            assert short_done < long_done  # token-level round robin


async def test_a_full_queue_answers_429_and_frees_up_when_a_client_leaves(
    endless_model_dir: Path, tmp_path: Path
) -> None:
    async with local_backend(
        endless_model_dir, tmp_path, local_max_queue=1, local_max_concurrent=1
    ) as backend:
        long_stream = backend.chat_stream(body(backend, LONG))
        await anext(long_stream)

        with pytest.raises(Overloaded) as raised:
            await backend.chat(body(backend, 2))
        assert raised.value.status_code == 429
        assert raised.value.error_type == "rate_limit_error"

        await long_stream.aclose()  # the client went away: its generation is dropped
        deadline = time.monotonic() + 5
        while True:
            try:
                answer = await backend.chat(body(backend, 2))
                break
            except Overloaded:
                assert time.monotonic() < deadline, "the abandoned generation still holds the queue"
                await asyncio.sleep(0.02)
        assert answer["choices"][0]["message"]["content"]


async def test_requests_after_close_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    async with local_backend(tiny_model_dir, tmp_path) as backend:
        await backend.check_ready()
    with pytest.raises(Exception) as raised:
        await backend.check_ready()
    assert getattr(raised.value, "status_code", None) == 503
    with pytest.raises(Exception) as raised:
        await backend.chat(body(backend, 2))
    assert getattr(raised.value, "status_code", None) == 503
