"""Adapters from the registry: hot-loaded for the policy, never seen by the frozen judge."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from service.backends.local.backend import LocalBackend
from service.conscience.judge import Judge, Verdict
from service.core.backend import BackendError
from service.frameworks import load_frameworks
from service.store.db import Database
from service.store.models import AdapterStatus, AdapterVersion
from service.store.records import utcnow
from tests.local.conftest import local_settings

JUDGE_MESSAGES = [
    {"role": "system", "content": "Reply with one word: ethical, neutral or unethical."},
    {"role": "user", "content": "<answer>Knead the dough and bake it.</answer>"},
]
LABELS = ("ethical", "neutral", "unethical")


async def register(db: Database, name: str, path: Path | str, *, base_model: str) -> None:
    """What the trainer's publish does: retire the active version, activate this one."""
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(AdapterVersion)
            .where(AdapterVersion.status == AdapterStatus.ACTIVE.value)
            .values(status=AdapterStatus.RETIRED.value)
        )
        session.add(
            AdapterVersion(
                name=name, base_model=base_model, path=str(path),
                status=AdapterStatus.ACTIVE.value, activated_at=utcnow(),
            )
        )


async def retire_all(db: Database) -> None:
    async with db.sessions() as session, session.begin():
        await session.execute(update(AdapterVersion).values(status=AdapterStatus.RETIRED.value))


def body(model: str | None, max_tokens: int = 24) -> dict[str, Any]:
    request: dict[str, Any] = {
        "messages": [{"role": "user", "content": "How do I bake bread at home?"}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    if model is not None:
        request["model"] = model
    return request


async def answer(backend: LocalBackend, model: str | None, max_tokens: int = 24) -> str:
    response = await backend.chat(body(model, max_tokens))
    return response["choices"][0]["message"]["content"]


async def judge(backend: LocalBackend, model: str) -> dict[str, float]:
    return (await backend.label_probs(model, JUDGE_MESSAGES, LABELS)).probs


async def framework_verdict(backend: LocalBackend) -> Verdict:
    """The pipeline's own judge on the three laws, asking the frozen base model."""
    judge_ = Judge(backend, threshold=0.5, max_answer_chars=2000, reasoned_max_tokens=8)
    framework = load_frameworks(None)["three_laws"]
    conversation = [{"role": "user", "content": "How do I bake bread at home?"}]
    return await judge_.judge(
        framework, conversation, "Knead the dough and bake it.", judge_model=backend.served_base_name
    )


async def started_backend(model_dir: Path, cache_dir: Path, db: Database, poll_s: float) -> LocalBackend:
    settings = local_settings(model_dir, cache_dir, adapter_poll_s=poll_s)
    backend = await asyncio.to_thread(LocalBackend.from_settings, settings, db)
    await backend.start()
    return backend


async def test_hot_swap_changes_the_policy_not_the_judge(
    db: Database, endless_model_dir: Path, lora_adapters: list[Path], tmp_path: Path
) -> None:
    backend = await started_backend(endless_model_dir, tmp_path, db, poll_s=3600)
    base = backend.served_base_name
    try:
        assert backend.active_adapter_name is None
        base_answer, base_verdict = await answer(backend, base), await judge(backend, base)
        pipeline_verdict = await framework_verdict(backend)
        assert await answer(backend, None) == base_answer  # no adapter: the policy is the base

        await register(db, "conscience-v1", lora_adapters[0], base_model=base)
        await backend.refresh_adapters()

        assert backend.active_adapter_name == "conscience-v1"
        assert [(m["id"], m["parent"]) for m in await backend.models()] == [
            (base, None), ("conscience-v1", base)
        ]
        v1_answer = await answer(backend, "conscience-v1")
        assert v1_answer != base_answer
        assert await answer(backend, None) == v1_answer
        assert await answer(backend, base) == base_answer
        assert await judge(backend, base) == pytest.approx(base_verdict, abs=1e-6)
        assert await judge(backend, "conscience-v1") != pytest.approx(base_verdict, abs=1e-6)
        assert (await framework_verdict(backend)).score == pytest.approx(pipeline_verdict.score, abs=1e-6)
        v1_long = await answer(backend, "conscience-v1", max_tokens=300)

        # Swap while a v1 generation is in flight: it finishes on v1, new requests get v2.
        stream = backend.chat_stream({**body("conscience-v1", 300), "stream": True})
        first = await anext(stream)
        rest = asyncio.create_task(_finished_text(stream))
        await register(db, "conscience-v2", lora_adapters[1], base_model=base)
        await backend.refresh_adapters()
        swapped_at = time.monotonic()
        streamed_text, finished_at = await rest

        assert swapped_at < finished_at
        assert first["choices"][0]["delta"]["content"] + streamed_text == v1_long
        assert backend.active_adapter_name == "conscience-v2"
        v2_answer = await answer(backend, "conscience-v2")
        assert v2_answer not in (v1_answer, base_answer)
        with pytest.raises(BackendError) as raised:
            await answer(backend, "conscience-v1")
        assert raised.value.status_code == 404
        assert set(backend.engine.loaded.model.peft_config) == {"conscience-v2"}
        assert await judge(backend, base) == pytest.approx(base_verdict, abs=1e-6)

        # Roll back to no adapter at all.
        await retire_all(db)
        await backend.refresh_adapters()
        assert backend.active_adapter_name is None
        assert [m["id"] for m in await backend.models()] == [base]
        assert await answer(backend, None) == base_answer
    finally:
        await backend.aclose()


async def _finished_text(stream: Any) -> tuple[str, float]:
    text, finished_at = "", 0.0
    async for chunk in stream:
        for choice in chunk["choices"]:
            text += choice["delta"].get("content") or ""
            if choice["finish_reason"]:
                finished_at = time.monotonic()
    return text, finished_at


async def test_the_watcher_polls_and_skips_an_adapter_that_fails_to_load(
    db: Database, tiny_model_dir: Path, lora_adapters: list[Path], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = await started_backend(tiny_model_dir, tmp_path, db, poll_s=0.05)
    try:
        base = backend.served_base_name
        with caplog.at_level(logging.ERROR, logger="conscience.local.registry"):
            await register(db, "broken", tmp_path / "no-such-adapter", base_model=base)
            await asyncio.sleep(0.5)  # about ten polls
        failures = [r for r in caplog.records if "could not be loaded" in r.getMessage()]
        assert len(failures) == 1  # tried once, then skipped until the registry changes
        assert backend.active_adapter_name is None
        assert await answer(backend, base)  # still serving

        await register(db, "conscience-v1", lora_adapters[0], base_model=base)
        deadline = time.monotonic() + 10
        while backend.active_adapter_name != "conscience-v1":
            assert time.monotonic() < deadline, "the watcher did not load the new adapter"
            await asyncio.sleep(0.02)
    finally:
        await backend.aclose()


async def test_refresh_needs_a_registry(backend: LocalBackend) -> None:
    with pytest.raises(RuntimeError, match="registry"):
        await backend.refresh_adapters()
