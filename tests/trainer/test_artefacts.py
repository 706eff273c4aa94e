from __future__ import annotations

from pathlib import Path

import pytest

from trainer.common.artefacts import (
    ADAPTER_FILES,
    is_complete_adapter,
    remove_stale_staging,
    staged_adapter,
)


def write_adapter(directory: Path) -> None:
    for name in ADAPTER_FILES:
        (directory / name).write_text("{}")


def test_commit_renames_a_complete_adapter_into_place(tmp_path: Path) -> None:
    with staged_adapter(tmp_path, "conscience-v1") as staged:
        write_adapter(staged.path)
        final = staged.commit()
    assert final == (tmp_path / "conscience-v1").resolve()
    assert is_complete_adapter(final)
    assert [path.name for path in tmp_path.iterdir()] == ["conscience-v1"]


def test_a_failure_before_commit_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), staged_adapter(tmp_path, "conscience-v1") as staged:
        (staged.path / "adapter_config.json").write_text("{}")
        raise RuntimeError("killed mid-save")
    assert list(tmp_path.iterdir()) == []


def test_an_incomplete_adapter_is_never_committed(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        with staged_adapter(tmp_path, "conscience-v1") as staged:
            (staged.path / "adapter_config.json").write_text("{}")
            staged.commit()
    assert list(tmp_path.iterdir()) == []


def test_an_existing_version_directory_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "conscience-v1").mkdir()
    with pytest.raises(FileExistsError):
        with staged_adapter(tmp_path, "conscience-v1"):
            pass
    assert list((tmp_path / "conscience-v1").iterdir()) == []


def test_stale_staging_of_killed_runs_is_removed(tmp_path: Path) -> None:
    stale = tmp_path / ".staging-conscience-v2-abc"
    stale.mkdir()
    write_adapter(stale)
    keep = tmp_path / "conscience-v1"
    keep.mkdir()
    assert remove_stale_staging(tmp_path) == [stale]
    assert [path.name for path in tmp_path.iterdir()] == ["conscience-v1"]
