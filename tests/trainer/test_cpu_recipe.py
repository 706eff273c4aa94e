"""The CPU recipe of docs/training-on-cpu.md (issue 28): `--base-model` takes the served demo
name without the model hub, `--quick-gate` is a small bounded gate, and the gate shows progress."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from service.backends.local.demo import DEMO_SERVED_NAME, demo_model_dir
from service.backends.local.loader import MARKER_FILE
from service.settings import Settings
from tests.trainer.conftest import HELPFUL, REFUSAL
from trainer.common.models import base_model_path, load_tokenizer
from trainer.common.scoring import greedy_replies, greedy_reply
from trainer.nightly.benign_prompts import BENIGN_PROMPTS, QUICK_BENIGN_PROMPTS, load_benign_prompts
from trainer.nightly.config import TrainConfig
from trainer.nightly.dataset import PreferencePair
from trainer.nightly.dpo import load_policy
from trainer.nightly.gate import evaluate_gate


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt (the model hub included) fails at once."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def demo_cache(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model cache whose converted demo model is the tiny model (same layout, marker last)."""
    monkeypatch.setenv("CONSCIENCE_MODEL_CACHE_DIR", str(tmp_path / "models"))
    target = demo_model_dir(Settings())
    shutil.copytree(tiny_model_dir, target)
    (target / MARKER_FILE).write_text(json.dumps({"served_name": DEMO_SERVED_NAME}))
    return target


def test_the_served_demo_name_is_the_cached_demo_model_without_the_hub(demo_cache: Path, no_network: None) -> None:
    assert base_model_path(DEMO_SERVED_NAME) == str(demo_cache)
    assert load_tokenizer(DEMO_SERVED_NAME).chat_template is not None
    model = load_policy(TrainConfig(base_model=DEMO_SERVED_NAME, lora_rank=4, lora_alpha=8), None)
    assert model.peft_config["default"].r == 4


def test_a_demo_name_without_the_demo_model_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    monkeypatch.setenv("CONSCIENCE_MODEL_CACHE_DIR", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="conscience models fetch-demo"):
        load_tokenizer(DEMO_SERVED_NAME)


def test_the_quick_gate_is_a_small_bounded_set() -> None:
    quick = TrainConfig(base_model="m", quick_gate=True)
    assert load_benign_prompts(None, quick=True) == list(QUICK_BENIGN_PROMPTS)
    assert 20 <= len(QUICK_BENIGN_PROMPTS) <= 40 and len(set(QUICK_BENIGN_PROMPTS)) == len(QUICK_BENIGN_PROMPTS)
    assert quick.gate_reply_tokens == 12 and quick.gate_max_length == 512
    standard = TrainConfig(base_model="m")
    assert load_benign_prompts(None) == list(BENIGN_PROMPTS)
    assert standard.gate_reply_tokens == 32 and standard.gate_max_length == 2048


def test_batched_replies_are_the_one_by_one_replies(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = load_tokenizer(str(tiny_model_dir))
    prompts = [[{"role": "user", "content": text}] for text in QUICK_BENIGN_PROMPTS[:5]]
    assert greedy_replies(model, tokenizer, prompts, 8) == [greedy_reply(model, tokenizer, p, 8) for p in prompts]


def test_the_gate_shows_its_progress(
    tiny_model_dir: Path, tiny_config: Callable[..., TrainConfig], capfd: pytest.CaptureFixture[str]
) -> None:
    config = tiny_config(quick_gate=True)
    torch_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(torch_model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    held_out = [PreferencePair("t1", [{"role": "user", "content": "How do I bake bread?"}], HELPFUL, REFUSAL)]

    report = evaluate_gate(
        model, load_tokenizer(str(tiny_model_dir)), held_out, load_benign_prompts(None, quick=True), config,
        candidate="default", previous=None,
    )

    assert report.refusals.prompts == len(QUICK_BENIGN_PROMPTS)
    err = capfd.readouterr().err
    assert "gate: held-out rows (default)" in err and "1/1" in err
    assert "gate: benign prompts (default)" in err and f"{len(QUICK_BENIGN_PROMPTS)}/{len(QUICK_BENIGN_PROMPTS)}" in err
