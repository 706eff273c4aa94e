"""Whole runs in-process: triples in the database → adapter on disk → registry → serving."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from peft import PeftModel
from rich.console import Console
from sqlalchemy import select, update
from transformers import AutoModelForCausalLM, AutoTokenizer

from service.adapters.publish import LocalPublisher
from service.adapters.registry import get_version, list_versions
from service.backends.local.backend import LocalBackend
from service.settings import Settings
from service.store.db import Database
from service.store.models import AdapterStatus, Triple, TripleStatus
from tests.trainer.conftest import HELPFUL, PREFER_HELPFUL, REFUSAL, seed_triples, sqlite_only
from trainer.common.artefacts import ADAPTER_FILES
from trainer.common.scoring import greedy_reply
from trainer.nightly.config import TrainConfig
from trainer.nightly.dataset import PreferencePair, split_held_out
from trainer.nightly.run import Outcome, run_training

QUESTION = [{"role": "user", "content": "How do I bake bread at home?"}]


async def train(config: TrainConfig) -> tuple[Outcome, str, str]:
    output = io.StringIO()
    result = await run_training(config, LocalPublisher(), Console(file=output, width=200))
    return result.outcome, result.message, output.getvalue()


async def triple_states(db: Database) -> dict[str, tuple[str, str | None]]:
    async with db.sessions() as session:
        triples = await session.scalars(select(Triple))
        return {triple.id: (triple.status, triple.trained_in_version) for triple in triples}


async def serve_with_local_backend(db: Database, model_dir: Path, version: str) -> str:
    settings = Settings(local_model=str(model_dir), adapter_poll_s=3600)
    backend = LocalBackend.from_settings(settings, db)
    await backend.start()
    try:
        assert backend.active_adapter_name == version
        answer = await backend.chat(
            {"model": version, "messages": QUESTION, "max_tokens": 8, "temperature": 0}
        )
    finally:
        await backend.aclose()
    assert answer["model"] == version
    return answer["choices"][0]["message"]["content"]


def reference_reply(model_dir: Path, adapter_dir: Path | None) -> str:
    """What greedy decoding gives with these weights, computed without the engine."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    return greedy_reply(model.eval(), AutoTokenizer.from_pretrained(model_dir), QUESTION, 8)


async def test_train_publishes_locally_and_the_embedded_engine_serves_the_new_adapter(
    db: Database, db_url: str, tiny_config: Callable[..., TrainConfig], tiny_model_dir: Path
) -> None:
    ids = await seed_triples(db, 8, **PREFER_HELPFUL)
    config = tiny_config(db_url=db_url)

    outcome, message, log = await train(config)

    assert (outcome, message) == (Outcome.PUBLISHED, "conscience-v1 is active")
    assert "step 4/4" in log and "rewards/margins" in log
    adapter_dir = config.adapters_dir.resolve() / "conscience-v1"
    assert {path.name for path in adapter_dir.iterdir()} >= set(ADAPTER_FILES)
    assert [path.name for path in config.adapters_dir.iterdir()] == ["conscience-v1"]
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["modules_to_save"] is None and adapter_config["use_dora"] is False
    assert set(adapter_config["target_modules"]) == set(config.lora_target_modules)

    version = await get_version(db, "conscience-v1")
    assert version.status == AdapterStatus.ACTIVE and version.activated_at is not None
    assert version.path == str(adapter_dir) and version.base_model == config.base_model
    assert version.parent_id is None and len(version.dataset_hash or "") == 64
    assert version.triple_count == 6  # 8 selected, ceil(8 * 0.25) held out
    assert version.metrics["gate"]["passed"] is True
    assert version.metrics["gate"]["held_out"]["candidate"]["accuracy"] == 1.0

    states = await triple_states(db)
    trained = [i for i in ids if states[i] == (TripleStatus.TRAINED, version.id)]
    held_out = [i for i in ids if states[i] == (TripleStatus.APPROVED, None)]
    assert (len(trained), len(held_out)) == (6, 2)

    served = await serve_with_local_backend(db, tiny_model_dir, "conscience-v1")
    assert served == reference_reply(tiny_model_dir, adapter_dir)
    assert served != reference_reply(tiny_model_dir, None)


@sqlite_only
async def test_a_second_run_continues_from_the_active_adapter(
    db: Database, db_url: str, tiny_config: Callable[..., TrainConfig]
) -> None:
    config = tiny_config(db_url=db_url)
    await seed_triples(db, 8, **PREFER_HELPFUL)
    assert (await train(config))[0] == Outcome.PUBLISHED
    await seed_triples(db, 8, **PREFER_HELPFUL)

    outcome, message, log = await train(config)

    assert outcome == Outcome.PUBLISHED, message
    assert "continuing from conscience-v1" in log
    first, second = await get_version(db, "conscience-v1"), await get_version(db, "conscience-v2")
    assert (first.status, second.status) == (AdapterStatus.RETIRED, AdapterStatus.ACTIVE)
    assert second.parent_id == first.id
    # The two held-out triples of run 1 were selected again, next to the eight new ones.
    assert second.triple_count + second.metrics["gate"]["held_out_rows"] == 10
    assert second.metrics["gate"]["held_out"]["previous"]["accuracy"] == 1.0


@sqlite_only
async def test_a_version_that_raises_refusals_is_stored_failed_and_not_activated(
    db: Database, db_url: str, tiny_config: Callable[..., TrainConfig]
) -> None:
    # Teach the model to refuse: the refusal is "chosen", plus an SFT term on it.
    await seed_triples(db, 8, **{**PREFER_HELPFUL, "chosen": REFUSAL, "rejected": HELPFUL})
    config = tiny_config(db_url=db_url, max_steps=12, learning_rate=2e-2, sft_weight=1.0)

    outcome, message, _ = await train(config)

    assert outcome == Outcome.FAILED_GATE
    assert "refusal rate on benign prompts rose" in message
    [version] = await list_versions(db)
    assert version.status == AdapterStatus.FAILED and version.activated_at is None
    assert "refusal rate" in (version.failure_reason or "")
    refusals = version.metrics["gate"]["refusal_rate"]
    assert refusals["candidate"] > refusals["previous"] + config.max_refusal_increase
    # its triples stay available to a later run
    assert all(state == (TripleStatus.APPROVED, None) for state in (await triple_states(db)).values())


async def test_too_few_pairs_is_nothing_to_do(
    db: Database, db_url: str, tiny_config: Callable[..., TrainConfig]
) -> None:
    await seed_triples(db, 3)
    await seed_triples(db, 5, status=TripleStatus.PENDING)
    config = tiny_config(db_url=db_url, min_pairs=4)

    outcome, message, _ = await train(config)

    assert outcome == Outcome.NOTHING_TO_DO
    assert message == "nothing to do: 3 eligible triple(s), --min-pairs is 4"
    assert await list_versions(db) == []
    assert not config.adapters_dir.exists() or not any(config.adapters_dir.iterdir())


@sqlite_only
async def test_a_version_worse_on_held_out_triples_than_its_parent_fails_the_gate(
    db: Database, db_url: str, tiny_config: Callable[..., TrainConfig]
) -> None:
    prefer_refusal = {**PREFER_HELPFUL, "chosen": REFUSAL, "rejected": HELPFUL}
    lenient = tiny_config(db_url=db_url, max_refusal_increase=1.0)
    await seed_triples(db, 8, **prefer_refusal)
    assert (await train(lenient))[0] == Outcome.PUBLISHED  # v1 prefers the refusals

    # Run 2 trains towards the helpful answers but is gated on triples that prefer refusals:
    # rewrite the triples the run will hold out (the split is a pure function of the ids).
    await seed_triples(db, 8)
    eligible = [i for i, (status, version) in (await triple_states(db)).items() if version is None]
    as_pairs = [PreferencePair(i, [], "", "") for i in eligible]
    held_out = {p.triple_id for p in split_held_out(as_pairs, lenient.eval_fraction, lenient.seed).held_out}
    async with db.sessions() as session, session.begin():
        for triple_id in eligible:
            values = prefer_refusal if triple_id in held_out else PREFER_HELPFUL
            await session.execute(update(Triple).where(Triple.id == triple_id).values(**values))

    outcome, message, _ = await train(replace(lenient, max_steps=12, learning_rate=2e-2))

    assert outcome == Outcome.FAILED_GATE
    assert "held-out preference accuracy" in message
    second = await get_version(db, "conscience-v2")
    scores = second.metrics["gate"]["held_out"]
    assert scores["candidate"]["accuracy"] < scores["previous"]["accuracy"] - lenient.max_accuracy_drop
    assert (await get_version(db, "conscience-v1")).status == AdapterStatus.ACTIVE
