"""`conscience train` and `conscience adapters` as an operator runs them."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from conscience_cli import main as cli
from service.adapters.registry import VersionDraft, active_version, list_versions, record_version
from service.store.db import Database
from service.store.models import Triple, TripleStatus
from tests.fakes.upstream import FakeUpstream
from tests.trainer.conftest import PREFER_HELPFUL, seed_triples, sqlite_only
from trainer.common.artefacts import is_complete_adapter
from trainer.nightly.config import TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
VLLM_KEY_REFUSED = (
    "error: --vllm-api-key is not accepted: a secret on the command line is shown to every user (ps); "
    "set CONSCIENCE_VLLM_API_KEY, or name a file holding it with CONSCIENCE_VLLM_API_KEY_FILE"
)
FIRST_STEP_TIMEOUT_S = 180.0


def train_flags(config: TrainConfig) -> list[str]:
    """The tiny_config knobs as `train` flags."""
    return [
        "train",
        f"--base-model={config.base_model}",
        f"--db-url={config.db_url}",
        f"--adapters-dir={config.adapters_dir}",
        f"--min-pairs={config.min_pairs}",
        f"--eval-fraction={config.eval_fraction}",
        f"--learning-rate={config.learning_rate}",
        f"--max-steps={config.max_steps}",
        f"--batch-size={config.batch_size}",
        f"--gradient-accumulation={config.gradient_accumulation}",
        f"--max-length={config.max_length}",
        f"--lora-rank={config.lora_rank}",
        f"--lora-alpha={config.lora_alpha}",
        f"--gate-max-new-tokens={config.gate_max_new_tokens}",
    ]


async def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """The CLI in this process (its own event loop runs in a worker thread)."""
    cli.command_tree()
    return await asyncio.to_thread(CliRunner().invoke, cli.app, list(args), env={"COLUMNS": "200", **(env or {})})


async def read_until_first_step(process: asyncio.subprocess.Process) -> list[str]:
    lines: list[str] = []
    assert process.stdout is not None
    while True:
        raw = await process.stdout.readline()
        if not raw:
            raise AssertionError("trainer exited before its first step:\n" + "".join(lines))
        lines.append(raw.decode(errors="replace"))
        if lines[-1].startswith("step 1/"):
            return lines


@pytest.mark.slow
async def test_a_killed_run_leaves_nothing_and_a_concurrent_run_exits_cleanly(
    db: Database, db_url: str, tiny_config: Callable[..., TrainConfig]
) -> None:
    await seed_triples(db, 8, **PREFER_HELPFUL)
    long_run = tiny_config(db_url=db_url, max_steps=1_000_000)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trainer.nightly.cli", *train_flags(long_run),
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await asyncio.wait_for(read_until_first_step(process), FIRST_STEP_TIMEOUT_S)

        second = await invoke(*train_flags(tiny_config(db_url=db_url)))
        assert second.exit_code == 0, second.output
        assert "another training run holds" in second.output
    finally:
        process.kill()
        await process.wait()

    assert await list_versions(db) == []
    async with db.sessions() as session:
        statuses = {triple.status for triple in await session.scalars(select(Triple))}
    assert statuses == {TripleStatus.APPROVED}
    adapters_dir = long_run.adapters_dir
    assert not any(is_complete_adapter(path) for path in adapters_dir.iterdir())
    assert all(path.name.startswith(".") for path in adapters_dir.iterdir())

    # The lock died with the killed process: the next run trains and clears its leftovers.
    third = await invoke(*train_flags(tiny_config(db_url=db_url)))
    assert third.exit_code == 0, third.output
    assert "conscience-v1 is active" in third.output
    assert [path.name for path in adapters_dir.iterdir()] == ["conscience-v1"]


@sqlite_only
async def test_train_publishes_to_vllm_and_adapters_commands_manage_versions(
    db: Database, db_url: str, tiny_config: Callable[..., TrainConfig]
) -> None:
    await seed_triples(db, 8, **PREFER_HELPFUL)
    config = tiny_config(db_url=db_url)
    with FakeUpstream(base_model=config.base_model) as vllm:
        trained = await invoke(*train_flags(config), "--publish=vllm", f"--vllm-url={vllm.origin}")
        assert trained.exit_code == 0, trained.output
        assert "conscience-v1 is active" in trained.output
        assert vllm.adapters == {"conscience-v1": str(config.adapters_dir.resolve() / "conscience-v1")}

        listed = await invoke("adapters", "list", f"--db-url={db_url}")
        assert listed.exit_code == 0, listed.output
        assert "conscience-v1" in listed.output and "active" in listed.output

        refused = await invoke("adapters", "rollback", f"--db-url={db_url}", f"--vllm-url={vllm.url}")
        assert refused.exit_code == 1
        assert "no earlier version to roll back to" in refused.output
        assert "Traceback" not in refused.output

        unknown = await invoke("adapters", "activate", "conscience-v7", f"--db-url={db_url}")
        assert unknown.exit_code == 1
        assert "no adapter version named 'conscience-v7'" in unknown.output

    assert (await active_version(db)).name == "conscience-v1"  # type: ignore[union-attr]


@sqlite_only
async def test_a_version_vllm_could_not_take_stays_a_candidate_to_publish_later(
    db: Database, db_url: str, tiny_config: Callable[..., TrainConfig]
) -> None:
    await seed_triples(db, 8, **PREFER_HELPFUL)
    config = tiny_config(db_url=db_url)
    vllm = FakeUpstream(base_model=config.base_model)  # its port refuses connections until start()

    trained = await invoke(*train_flags(config), "--publish=vllm", f"--vllm-url={vllm.url}")

    assert trained.exit_code == 1
    assert "unreachable" in trained.output and "Traceback" not in trained.output
    assert "conscience adapters activate conscience-v1" in trained.output
    [candidate] = await list_versions(db)
    assert candidate.status == "candidate"
    async with db.sessions() as session:
        trained_rows = await session.scalars(select(Triple).where(Triple.trained_in_version == candidate.id))
        assert len(trained_rows.all()) == candidate.triple_count

    vllm.api_key = "vllm-secret-key"  # from a file, as a Kubernetes secret is mounted; never a flag
    key_file = config.adapters_dir.parent / "vllm-key"
    key_file.write_text("vllm-secret-key\n")
    activate = ("adapters", "activate", "conscience-v1", f"--db-url={db_url}", f"--vllm-url={vllm.url}")
    with vllm:
        flagged = await invoke(*activate, "--vllm-api-key=vllm-secret-key")
        assert flagged.exit_code == 2 and flagged.output.strip() == VLLM_KEY_REFUSED
        published = await invoke(*activate, env={"CONSCIENCE_VLLM_API_KEY_FILE": str(key_file)})
        assert published.exit_code == 0, published.output
        assert set(vllm.adapters) == {"conscience-v1"}
    assert (await active_version(db)).name == "conscience-v1"  # type: ignore[union-attr]


async def test_adapters_commands_take_vllms_key_from_the_environment_and_refuse_it_as_a_flag(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    parent = await record_version(db, VersionDraft("conscience-v1", "base-model", tmp_path / "v1", None, True), [])
    await record_version(db, VersionDraft("conscience-v2", "base-model", tmp_path / "v2", parent.id, True), [])
    with FakeUpstream(base_model="base-model") as vllm:
        vllm.api_key = "vllm-secret-key"  # every call without `Authorization: Bearer <it>` gets 401
        target = (f"--db-url={db_url}", f"--vllm-url={vllm.url}")
        for command in (("activate", "conscience-v2"), ("rollback",)):
            flagged = await invoke("adapters", *command, *target, "--vllm-api-key", "vllm-secret-key")
            assert flagged.exit_code == 2 and flagged.output.strip() == VLLM_KEY_REFUSED
        keyless = await invoke("adapters", "activate", "conscience-v2", *target)
        assert keyless.exit_code == 1 and "Traceback" not in keyless.output
        assert vllm.adapters == {}

        keyed = {"CONSCIENCE_VLLM_API_KEY": "vllm-secret-key"}
        activated = await invoke("adapters", "activate", "conscience-v2", *target, env=keyed)
        assert activated.exit_code == 0, activated.output
        rolled_back = await invoke("adapters", "rollback", *target, env=keyed)
        assert rolled_back.exit_code == 0, rolled_back.output
        assert "conscience-v1 is active" in rolled_back.output
        assert set(vllm.adapters) == {"conscience-v1", "conscience-v2"}
    assert (await active_version(db)).name == "conscience-v1"  # type: ignore[union-attr]
