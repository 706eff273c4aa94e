"""Fixtures of the embedded-engine tests: a LocalBackend over the tiny model, LoRA adapters."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.databases import db, db_url, empty_db  # noqa: F401  (pytest fixtures)

pytest.importorskip("torch")
pytest.importorskip("peft")

import openai

from service.api.server_limits import uvicorn_config
from service.app import create_app
from service.backends.local.backend import LocalBackend
from service.settings import Settings
from tests.fakes.server import ThreadedServer


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """A 64-wide model computes fastest on one thread; more only wait on each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def local_settings(model_dir: Path, cache_dir: Path, **overrides: object) -> Settings:
    """Settings of a local backend over `model_dir`: float32 weights unless `local_weights` says
    otherwise, since most tests compare the engine with a float32 forward pass of their own
    (tests/local/test_weights.py serves int8 and int4 weights)."""
    overrides.setdefault("local_weights", "float32")
    return Settings(
        backend="local", local_model=str(model_dir), model_cache_dir=cache_dir, **overrides
    )


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBackend]:
    """A LocalBackend without a registry, shared by a module's read-only tests.

    The model thread is independent of event loops, so one backend serves every test's loop.
    """
    settings = local_settings(tiny_model_dir, tmp_path_factory.mktemp("model-cache"))
    local = LocalBackend.from_settings(settings)
    yield local
    asyncio.run(local.aclose())


@pytest.fixture(scope="module")
def sdk_client(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    """The real `openai` SDK against the proxy (mode off, SQLite) serving the tiny model in
    process, shared by a module's tests."""
    path = tmp_path_factory.mktemp("proxy")
    settings = local_settings(
        tiny_model_dir, path / "cache", mode="off", local_threads=1,
        db_url=f"sqlite+aiosqlite:///{path / 'conscience.db'}", spool_path=path / "spool.jsonl",
    )
    options = {k: v for k, v in uvicorn_config(settings).items() if k not in ("host", "port")}
    with ThreadedServer(create_app(settings), **options) as server:
        yield openai.OpenAI(base_url=f"{server.origin}/v1", api_key="none", max_retries=0)


def write_lora_adapter(model_dir: Path, target: Path, *, seed: int) -> Path:
    """A LoRA adapter with random, non-zero weights on the attention projections (no training)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    get_peft_model(base, config).save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def lora_adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("adapters")
    return [write_lora_adapter(tiny_model_dir, root / f"adapter-{seed}", seed=seed) for seed in (1, 2)]


@pytest.fixture(scope="session")
def endless_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its end-of-turn logit pinned at 0, so greedy answers run to max_tokens."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    target = tmp_path_factory.mktemp("endless-qwen2")
    shutil.copytree(tiny_model_dir, target, dirs_exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.lm_head.weight[model.generation_config.eos_token_id] = 0.0
    model.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fixtures.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), arch="llama")
