"""One training run, start to finish: lock, select, train, gate, record, publish.

Order matters for crash safety. The adapter is trained and gated inside a hidden staging
directory, renamed into place, and only then recorded; the triples are marked trained in that
same transaction; activation comes last. A run killed at any point before the record leaves no
version and no trained triples; one killed after it leaves a `candidate` an operator (or the
next `adapters activate`) can publish.

Under `accelerate launch --num_processes N` every rank trains, and rank 0 alone does the rest
(trainer/nightly/distributed.py): one lock, one version, one record.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from rich.console import Console

from service.adapters.publish import Publisher, PublishError
from service.adapters.registry import (
    RegistryError,
    VersionDraft,
    active_version,
    next_version_name,
    record_version,
)
from service.store.db import Database
from service.store.models import AdapterVersion
from trainer.common.artefacts import remove_stale_staging, staged_adapter
from trainer.common.lock import TrainingLockHeld, training_lock
from trainer.nightly.benign_prompts import load_benign_prompts
from trainer.nightly.config import TrainConfig
from trainer.nightly.dataset import SplitPairs, split_held_out, to_pairs
from trainer.nightly.distributed import Plan, is_distributed, rank, share_plan
from trainer.nightly.dpo import TRAINED_ADAPTER, save_adapter, train_policy
from trainer.nightly.gate import GateReport, evaluate_gate
from trainer.nightly.progress import RichProgress
from trainer.nightly.select import select_triples

PREVIOUS_ADAPTER = "previous"

HYPERPARAMETERS = (
    "beta", "learning_rate", "epochs", "max_steps", "batch_size", "gradient_accumulation",
    "max_length", "sft_weight", "seed", "dtype", "lora_rank", "lora_alpha",
)


class Outcome(StrEnum):
    PUBLISHED = "published"
    NOTHING_TO_DO = "nothing_to_do"
    LOCKED = "locked"
    FAILED_GATE = "failed_gate"
    TRAINED_WITH_RANK_0 = "trained_with_rank_0"  # a rank other than 0 of a distributed run


@dataclass(frozen=True)
class RunResult:
    outcome: Outcome
    message: str
    version: AdapterVersion | None = None


async def run_training(config: TrainConfig, publisher: Publisher, console: Console) -> RunResult:
    if is_distributed() and rank() != 0:
        return await asyncio.to_thread(_train_beside_rank_0, config)
    db = Database(config.db_url)
    shared: list[bool] = []  # whether the other ranks were told what to train on
    try:
        async with training_lock(db):
            return await _run_locked(db, config, publisher, console, shared)
    except TrainingLockHeld as exc:
        return RunResult(Outcome.LOCKED, f"{exc}: this run exits without training")
    finally:
        if is_distributed() and not shared:
            await asyncio.to_thread(share_plan, None)  # nothing to train: release the others
        await db.dispose()


def _train_beside_rank_0(config: TrainConfig) -> RunResult:
    """A rank other than 0: train on what rank 0 sends; never the database or the adapters."""
    plan = share_plan(None)
    if plan is None:
        return RunResult(Outcome.NOTHING_TO_DO, f"rank {rank()}: rank 0 trains nothing this run")
    with tempfile.TemporaryDirectory(prefix="conscience-dpo-") as work_dir:
        train_policy(config, plan.parent_path, plan.pairs, Path(work_dir))
    return RunResult(Outcome.TRAINED_WITH_RANK_0, f"rank {rank()}: trained beside rank 0")


async def _run_locked(
    db: Database, config: TrainConfig, publisher: Publisher, console: Console, shared: list[bool]
) -> RunResult:
    remove_stale_staging(config.adapters_dir)
    triples = await select_triples(db, config)
    if len(triples) < config.min_pairs:
        return RunResult(
            Outcome.NOTHING_TO_DO,
            f"nothing to do: {len(triples)} eligible triple(s), --min-pairs is {config.min_pairs}",
        )
    split = split_held_out(to_pairs(triples), config.eval_fraction, config.seed)
    parent = await active_version(db)
    parent_path = _parent_adapter_path(parent, config)
    name = await next_version_name(db, config.adapters_dir, config.name_prefix)
    console.print(
        f"training {name} on {len(split.train)} pair(s), {len(split.held_out)} held out, "
        f"continuing from {parent.name if parent else 'the base model'}"
    )
    if is_distributed():
        await asyncio.to_thread(share_plan, Plan(split.train, parent_path))
        shared.append(True)
    with staged_adapter(config.adapters_dir, name) as staged:
        report, train_metrics = await asyncio.to_thread(
            _train_and_gate, config, split, parent_path, staged.path, console
        )
        path = staged.commit()
    version = await record_version(
        db,
        VersionDraft(
            name=name,
            base_model=config.base_model,
            path=path,
            parent_id=parent.id if parent else None,
            passed_gate=report.passed,
            metrics={
                "train": train_metrics,
                "gate": report.as_metrics(),
                "hyperparameters": _hyperparameters(config),
            },
            triple_count=len(split.train),
            dataset_hash=split.content_hash,
            failure_reason=report.failure_reason,
        ),
        [pair.triple_id for pair in split.train],
    )
    if not report.passed:
        return RunResult(
            Outcome.FAILED_GATE,
            f"{name} failed the gate and is not activated: {report.failure_reason}",
            version,
        )
    try:
        active = await publisher.activate(db, version)
    except PublishError as exc:
        raise PublishError(
            f"{exc}. {name} is recorded as a candidate; publish it with "
            f"`conscience adapters activate {name}` once the server is back"
        ) from exc
    return RunResult(Outcome.PUBLISHED, f"{name} is active", active)


def _parent_adapter_path(parent: AdapterVersion | None, config: TrainConfig) -> Path | None:
    if parent is None:
        return None
    if parent.base_model != config.base_model:
        raise RegistryError(
            f"the active adapter {parent.name} belongs to base model {parent.base_model!r}, "
            f"not {config.base_model!r}"
        )
    path = Path(parent.path)
    if not path.is_dir():
        raise RegistryError(f"the active adapter {parent.name} is missing from {path}")
    return path


def _train_and_gate(
    config: TrainConfig,
    split: SplitPairs,
    parent_path: Path | None,
    adapter_dir: Path,
    console: Console,
) -> tuple[GateReport, dict[str, Any]]:
    """Blocking: runs in a worker thread."""
    with tempfile.TemporaryDirectory(prefix="conscience-dpo-") as work_dir:
        policy = train_policy(
            config, parent_path, split.train, Path(work_dir), callbacks=[RichProgress(console)]
        )
    save_adapter(policy.model, adapter_dir)
    if parent_path is not None:
        policy.model.load_adapter(parent_path, adapter_name=PREVIOUS_ADAPTER)
    report = evaluate_gate(
        policy.model,
        policy.tokenizer,
        split.held_out,
        load_benign_prompts(config.benign_prompts, quick=config.quick_gate),
        config,
        candidate=TRAINED_ADAPTER,
        previous=PREVIOUS_ADAPTER if parent_path is not None else None,
    )
    return report, policy.metrics


def _hyperparameters(config: TrainConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in HYPERPARAMETERS}
