"""The nightly run on two processes: `accelerate launch --num_processes 2` on the CPU (gloo), the
tiny model. Both ranks train; rank 0 alone holds the lock, writes the one adapter version,
records it and marks the triples."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable

import pytest
from sqlalchemy import select

from service.adapters.registry import list_versions
from service.store.db import Database
from service.store.models import Triple, TripleStatus
from tests.trainer.conftest import PREFER_HELPFUL, seed_triples, sqlite_only
from tests.trainer.test_cli import REPO_ROOT, train_flags
from trainer.common.artefacts import is_complete_adapter
from trainer.nightly.config import TrainConfig

pytest.importorskip("accelerate")


@sqlite_only
async def test_two_processes_train_one_version(
    db: Database, db_url: str, tiny_config: Callable[..., TrainConfig]
) -> None:
    ids = await seed_triples(db, 8, **PREFER_HELPFUL)
    config = tiny_config(db_url=db_url)
    launcher = [
        sys.executable, "-m", "accelerate.commands.launch",
        # --multi_gpu is accelerate's torchrun launcher; with no GPU, Accelerate (use_cpu) sets
        # up MULTI_CPU on gloo. (`--cpu` would start a single process.)
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", "0",
        "-m", "trainer.nightly.cli", *train_flags(config),
    ]
    process = await asyncio.create_subprocess_exec(
        *launcher, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output = (await asyncio.wait_for(process.communicate(), 300))[0].decode(errors="replace")
    assert process.returncode == 0, output

    assert output.count("training conscience-v1 on") == 1  # rank 0 alone selected and named
    assert output.count("conscience-v1 is active") == 1
    assert "rank 1: trained beside rank 0" in output, output[:3000]
    assert "another training run holds" not in output
    [version] = await list_versions(db)
    assert version.name == "conscience-v1" and version.status == "active"
    assert [path.name for path in config.adapters_dir.iterdir()] == ["conscience-v1"]
    assert is_complete_adapter(config.adapters_dir / "conscience-v1")
    async with db.sessions() as session:
        triples = list(await session.scalars(select(Triple)))
    trained = [t for t in triples if t.status == TripleStatus.TRAINED.value]
    assert {t.trained_in_version for t in trained} == {version.id}
    assert len(trained) == version.triple_count and set(t.id for t in triples) == set(ids)


def test_the_shipped_7b_config_is_one_accelerate_reads() -> None:
    import json

    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DistributedType

    config = ClusterConfig.from_yaml_file(str(REPO_ROOT / "deploy/accelerate/deepspeed-zero2-7b.yaml"))
    assert config.distributed_type == DistributedType.DEEPSPEED and config.num_processes == 8
    deepspeed = json.loads((REPO_ROOT / config.deepspeed_config["deepspeed_config_file"]).read_text())
    assert deepspeed["zero_optimization"]["stage"] == 2
    # The trainer's flags decide these (a fixed value that disagreed would stop the run).
    assert deepspeed["gradient_accumulation_steps"] == deepspeed["train_micro_batch_size_per_gpu"] == "auto"
