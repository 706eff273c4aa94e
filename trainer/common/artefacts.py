"""Adapter directories appear complete or not at all.

An adapter is written into a hidden staging directory next to its final place and renamed into
place only once both PEFT files are on disk and flushed. A rename within one filesystem is
atomic, so a crash leaves either no `<adapters_dir>/<name>` or a complete one; a killed run's
staging directory is hidden, never referenced, and removed by the next run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.store.spool import fsync_path

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
STAGING_PREFIX = ".staging-"


def is_complete_adapter(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in ADAPTER_FILES)


class StagedAdapter:
    """A staging directory and the place it will be renamed to."""

    def __init__(self, staging: Path, final: Path) -> None:
        self.path = staging
        self.final = final

    def commit(self) -> Path:
        """Flush the adapter files and rename the directory into place."""
        missing = [name for name in ADAPTER_FILES if not (self.path / name).is_file()]
        if missing:
            raise FileNotFoundError(f"adapter in {self.path} is incomplete: missing {missing}")
        for name in ADAPTER_FILES:
            fsync_path(self.path / name)
        fsync_path(self.path)
        if self.final.exists():
            # os.rename would silently replace an empty directory: versions are immutable.
            raise FileExistsError(f"{self.final} already exists")
        os.rename(self.path, self.final)
        fsync_path(self.final.parent)
        return self.final


@contextmanager
def staged_adapter(adapters_dir: Path, name: str) -> Iterator[StagedAdapter]:
    """A staging directory for adapter `name`; removed on exit unless committed."""
    adapters_dir.mkdir(parents=True, exist_ok=True)
    final = adapters_dir.resolve() / name
    if final.exists():
        raise FileExistsError(f"{final} already exists")
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name}-", dir=final.parent))
    try:
        yield StagedAdapter(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(adapters_dir: Path) -> list[Path]:
    """Delete staging directories of killed runs. Call only while holding the training lock."""
    if not adapters_dir.is_dir():
        return []
    stale = [path for path in adapters_dir.iterdir() if path.name.startswith(STAGING_PREFIX)]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale
