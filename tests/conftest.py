"""Fixtures shared across test areas. Area-specific fixtures live in each folder's conftest."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Qwen2 with a local tokenizer (see tests/fixtures/tiny_model.py)."""
    pytest.importorskip("torch")
    from tests.fixtures.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"))
