"""`conscience finetune` on the tiny model: the conscience term, the baseline, the registry."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from service.adapters.registry import get_version
from service.backends.local.backend import LocalBackend
from service.conscience.judge import Judge
from service.frameworks import load_frameworks
from service.settings import Settings
from service.store.db import Database
from service.store.models import AdapterStatus
from tests.finetune.conftest import REQUESTS
from trainer.common.artefacts import is_complete_adapter
from trainer.finetune.cli import finetune_app
from trainer.finetune.config import FinetuneConfig
from trainer.finetune.run import run_finetune

CALIBRATION_ANSWERS = 12


async def median_judge_score(model_dir: Path, cache_dir: Path) -> float:
    """The median score the tiny model's judge gives its own sampled answers to the probes.

    A random model's scores differ only slightly between answers; with the threshold at their
    median about half of the policy's answers are flagged and about half of the repair drafts
    pass, so pairs are found from genuine verdicts.
    """
    backend = LocalBackend.from_settings(
        Settings(backend="local", local_model=str(model_dir), model_cache_dir=cache_dir)
    )
    judge = Judge(backend, threshold=0.5, max_answer_chars=12000, reasoned_max_tokens=1)
    framework = load_frameworks()["three_laws"]
    scores = []
    try:
        for seed in range(CALIBRATION_ANSWERS):
            prompt = [{"role": "user", "content": REQUESTS[seed % len(REQUESTS)]}]
            reply = await backend.chat({"messages": prompt, "max_tokens": 8, "temperature": 1.0, "seed": seed})
            answer = reply["choices"][0]["message"]["content"]
            verdict = await judge.judge(framework, prompt, answer, judge_model=backend.served_base_name)
            scores.append(verdict.score)
    finally:
        await backend.aclose()
    return statistics.median(scores)


async def test_alignment_weight_finds_pairs_and_lowers_their_loss(
    tiny_finetune: Callable[..., FinetuneConfig], tiny_model_dir: Path, tmp_path: Path
) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'conscience.db'}"
    database = Database(db_url)
    await database.create_all()
    threshold = await median_judge_score(tiny_model_dir, tmp_path / "cache")
    config = tiny_finetune(
        db_url=db_url, alignment_weight=1.0, beta=0.5, threshold=threshold, max_repairs=4,
    )
    result = await run_finetune(config, Console(quiet=True))

    metrics = result.metrics
    assert set(metrics.pairs_per_step) == {0, 2}  # a conscience step every 2 of 4 steps
    assert sum(metrics.pairs_per_step.values()) > 0
    assert metrics.probe_answers == 2 * config.probe_batch
    assert 0 < metrics.flagged <= metrics.probe_answers
    # A flagged answer without a pair used up all its drafts; each discarded one has a reason.
    found = sum(metrics.pairs_per_step.values())
    assert sum(metrics.discarded_drafts.values()) >= config.max_repairs * (metrics.flagged - found)
    # off_topic: a random model's states put its drafts anywhere (the proxy's topic check runs here too).
    assert set(metrics.discarded_drafts) <= {"judge", "refusal", "empty", "off_topic"}
    assert metrics.first_pairs_dpo_loss["end"] < metrics.first_pairs_dpo_loss["start"]
    assert any(loss is not None for loss in metrics.dpo_loss)

    version = await get_version(database, result.version_name)
    assert version.status == AdapterStatus.CANDIDATE.value
    assert version.metrics["finetune"]["pairs_per_step"] == {
        str(step): count for step, count in metrics.pairs_per_step.items()
    }
    await database.dispose()


async def test_zero_weight_is_plain_finetuning_without_the_judge(
    tiny_finetune: Callable[..., FinetuneConfig], db: Database, db_url: str
) -> None:
    config = tiny_finetune(db_url=db_url, alignment_weight=0.0)
    result = await run_finetune(config, Console(quiet=True))
    metrics = result.metrics
    assert metrics.pairs_per_step == {} and metrics.probe_answers == 0 and metrics.flagged == 0
    assert metrics.dpo_loss == [None] * config.max_steps
    assert metrics.task_loss[-1] < metrics.task_loss[0]  # the task is being learned

    version = await get_version(db, result.version_name)
    assert version.name == "finetune-v1" and version.parent_id is None
    assert Path(version.path) == result.path and is_complete_adapter(result.path)
    assert version.metrics["hyperparameters"]["alignment_weight"] == 0.0


def test_the_command_registers_a_loadable_adapter(
    tiny_finetune: Callable[..., FinetuneConfig], tiny_model_dir: Path, task_data: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    db_url = f"sqlite+aiosqlite:///{tmp_path / 'conscience.db'}"
    asyncio.run(Database(db_url).create_all())
    adapters = tmp_path / "adapters"
    result = CliRunner().invoke(finetune_app, [
        "--base-model", str(tiny_model_dir), "--task-data", str(task_data), "--db-url", db_url,
        "--adapters-dir", str(adapters), "--max-steps", "2", "--batch-size", "2", "--max-length", "96",
        "--lora-rank", "4", "--lora-alpha", "8",
    ])
    assert result.exit_code == 0, result.output
    assert "finetune-v1 registered" in result.output
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.load_adapter(str(adapters / "finetune-v1"), adapter_name="loaded")
    assert "loaded" in model.peft_config


def test_bad_task_data_is_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "no answer"}]}\n')
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'conscience.db'}"
    asyncio.run(Database(db_url).create_all())
    result = CliRunner().invoke(finetune_app, [
        "--base-model", str(tiny_model_dir), "--task-data", str(bad), "--db-url", db_url,
    ])
    assert result.exit_code == 1
    assert "the last message must be the assistant's answer" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert "Loading weights" not in result.output  # the data is checked before the model loads


@pytest.mark.parametrize("weight", [-0.5])
def test_negative_weight_is_rejected(tiny_finetune: Callable[..., FinetuneConfig], weight: float) -> None:
    with pytest.raises(ValueError, match="alignment_weight"):
        tiny_finetune(db_url="sqlite+aiosqlite:///x.db", alignment_weight=weight)
