"""Fixtures shared across test areas. Area-specific fixtures live in each folder's conftest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.upstream import FakeUpstream


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Qwen2 with a local tokenizer (see tests/fixtures/tiny_model.py)."""
    pytest.importorskip("torch")
    from tests.fixtures.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[FakeUpstream]:
    """One fake OpenAI-compatible upstream (base model `base-model`) for the whole run."""
    with FakeUpstream(base_model="base-model") as server:
        yield server


@pytest.fixture
def up(upstream_server: FakeUpstream) -> FakeUpstream:
    """The shared fake upstream with its default script and no recorded requests."""
    upstream_server.reset()
    return upstream_server
