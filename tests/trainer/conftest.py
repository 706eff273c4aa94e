"""Trainer fixtures: seeded triples on both dialects and a TrainConfig sized for the tiny model."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from service.store.db import Database
from service.store.ingest import insert_records
from service.store.models import Triple, TripleStatus
from tests.store.databases import db, db_url, empty_db  # noqa: F401  (pytest fixtures)
from tests.store.factories import make_triple
from trainer.nightly.config import TrainConfig

# For tests whose subject is not the database (training, gating, vLLM calls): one dialect is
# enough, and each of them trains a model.
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

HELPFUL = "Here is how to bake bread at home: mix flour, water, salt and yeast."
REFUSAL = "I cannot help with that. Sorry, as an AI I will not do this."


async def seed_triples(
    db: Database, count: int, *, status: TripleStatus = TripleStatus.APPROVED, **overrides: Any
) -> list[str]:
    """Insert `count` triples with `status`; returns their ids in insertion order."""
    records = [make_triple(index, **overrides) for index in range(count)]
    refused = await insert_records(db, records)
    assert not refused
    ids = [record.id for record in records]
    await set_status(db, ids, status)
    return ids


async def set_status(db: Database, ids: Sequence[str], status: TripleStatus) -> None:
    async with db.sessions() as session, session.begin():
        await session.execute(update(Triple).where(Triple.id.in_(ids)).values(status=status.value))


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The tiny model gains nothing from threads, and on shared cores OpenMP's spinning worker
    threads make each step several times slower. Subprocesses get OMP_NUM_THREADS=1."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Overrides for seed_triples: the tiny model is taught to prefer the helpful answer.
PREFER_HELPFUL = {
    "prompt": [{"role": "user", "content": "How do I bake bread at home?"}],
    "chosen": HELPFUL,
    "rejected": REFUSAL,
}


@pytest.fixture
def tiny_config(tiny_model_dir: Path, tmp_path: Path) -> Callable[..., TrainConfig]:
    """TrainConfig for the tiny model: a few fast steps; pass db_url and any knob to change."""
    base = TrainConfig(
        base_model=str(tiny_model_dir),
        adapters_dir=tmp_path / "adapters",
        min_pairs=4,
        eval_fraction=0.25,
        learning_rate=5e-3,
        max_steps=4,
        batch_size=2,
        gradient_accumulation=1,
        max_length=96,
        lora_rank=4,
        lora_alpha=8,
        gate_max_new_tokens=8,
    )

    def build(**changes: Any) -> TrainConfig:
        return replace(base, **changes)

    return build
