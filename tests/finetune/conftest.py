"""Fine-tuning fixtures: a small chat dataset, databases of both dialects, a tiny-model config."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.store.databases import db, db_url, empty_db  # noqa: F401  (pytest fixtures)
from trainer.finetune.config import FinetuneConfig

pytest.importorskip("torch")
pytest.importorskip("peft")

REQUESTS = [
    "Write a function that adds two numbers.",
    "How do I bake bread at home?",
    "Write a Python function that reads a file.",
    "Explain what a robot is.",
]
ANSWER = "Here is how to write a Python function that adds two numbers: def add(a, b): return a + b"


@pytest.fixture
def task_data(tmp_path: Path) -> Path:
    path = tmp_path / "task.jsonl"
    lines = [
        json.dumps({"messages": [{"role": "user", "content": request}, {"role": "assistant", "content": ANSWER}]})
        for request in REQUESTS
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def tiny_finetune(tiny_model_dir: Path, task_data: Path, tmp_path: Path) -> Callable[..., FinetuneConfig]:
    """A FinetuneConfig of a few fast steps on the tiny model; pass db_url and any knob."""

    def build(**changes: Any) -> FinetuneConfig:
        values: dict[str, Any] = dict(
            base_model=str(tiny_model_dir), task_data=task_data, adapters_dir=tmp_path / "adapters",
            max_steps=4, batch_size=2, max_length=96, learning_rate=5e-3,
            lora_rank=4, lora_alpha=8, lora_dropout=0.0,
            probe_max_tokens=8, repair_max_tokens=8, conscience_every=2, probe_batch=6,
        )
        values.update(changes)
        return FinetuneConfig(**values)

    return build
