"""Registering a fine-tuned adapter: the next version name, an atomic directory, a registry row.

The training lock of the database is held only while naming, writing and recording, so a
nightly `conscience train` and a finetune never claim the same version name.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from service.adapters.registry import VersionDraft, next_version_name, record_version
from service.backends.local.loader import LoadedModel
from service.store.db import Database
from trainer.common.artefacts import staged_adapter
from trainer.common.lock import training_lock
from trainer.finetune.config import FinetuneConfig


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hyperparameters(config: FinetuneConfig) -> dict[str, Any]:
    return {
        key: str(value) if isinstance(value, Path) else value
        for key, value in asdict(config).items()
        if key != "db_url"  # may carry a password
    }


async def register_adapter(config: FinetuneConfig, loaded: LoadedModel, metrics: dict[str, Any]) -> Path:
    """Save the active (policy) adapter as the next version, a `candidate` that is not activated;
    returns its directory, named after the version."""
    db = Database(config.db_url)
    try:
        async with training_lock(db):
            name = await next_version_name(db, config.adapters_dir, config.name_prefix)
            with staged_adapter(config.adapters_dir, name) as staged:
                # transformers saves the active adapter only, in PEFT format.
                await asyncio.to_thread(loaded.model.save_pretrained, staged.path)
                path = staged.commit()
            await record_version(
                db,
                VersionDraft(
                    name=name, base_model=config.base_model, path=path, parent_id=None,
                    passed_gate=True,
                    metrics={"finetune": metrics, "hyperparameters": _hyperparameters(config)},
                    dataset_hash=_file_sha256(config.task_data),
                ),
                [],
            )
    finally:
        await db.dispose()
    return path
