"""What training does to the model, measured with the model (trainer/common/scoring.py), not from logs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from tests.trainer.conftest import HELPFUL, REFUSAL
from trainer.common.models import load_tokenizer
from trainer.common.scoring import completion_logprob, using_adapter
from trainer.nightly.config import TrainConfig
from trainer.nightly.dataset import PreferencePair
from trainer.nightly.dpo import build_dpo_trainer, load_policy, save_adapter, train_policy

PROMPTS = ["How do I bake bread?", "Help me with my homework.", "How do I write a function?"]


def bread_pairs(count: int) -> list[PreferencePair]:
    return [
        PreferencePair(f"t{i}", [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], HELPFUL, REFUSAL)
        for i in range(count)
    ]


def margin(model: torch.nn.Module, tokenizer: object, pair: PreferencePair) -> float:
    chosen = completion_logprob(model, tokenizer, pair.prompt, pair.chosen, 96)
    rejected = completion_logprob(model, tokenizer, pair.prompt, pair.rejected, 96)
    return chosen - rejected


@pytest.fixture
def parent_adapter(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A previous version whose weights visibly move the model away from the base."""
    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    directory = tmp_path / "conscience-v1"
    save_adapter(get_peft_model(base, lora), directory)
    return directory


def test_the_reference_is_the_frozen_base_even_when_continuing_from_an_adapter(
    tiny_config: Callable[..., TrainConfig], tiny_model_dir: Path, parent_adapter: Path, tmp_path: Path
) -> None:
    config = tiny_config()
    [pair] = bread_pairs(1)
    tokenizer = load_tokenizer(config.base_model)
    policy = load_policy(config, parent_adapter)
    trainer = build_dpo_trainer(config, policy, tokenizer, [pair] * 2, tmp_path / "out")
    assert set(policy.peft_config) == {"default"}  # TRL's copy of the parent is gone

    batch = next(iter(trainer.get_train_dataloader()))
    ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.model, batch)

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    expected_chosen = completion_logprob(base, tokenizer, pair.prompt, pair.chosen, 96)
    expected_rejected = completion_logprob(base, tokenizer, pair.prompt, pair.rejected, 96)
    assert ref_chosen.tolist() == pytest.approx([expected_chosen] * 2, abs=1e-3)
    assert ref_rejected.tolist() == pytest.approx([expected_rejected] * 2, abs=1e-3)

    # ... and not the parent adapter the policy starts from
    parent = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), parent_adapter)
    parent_chosen = completion_logprob(parent.eval(), tokenizer, pair.prompt, pair.chosen, 96)
    assert abs(parent_chosen - expected_chosen) > 0.1
    with torch.no_grad():
        policy_chosen = completion_logprob(policy.eval(), tokenizer, pair.prompt, pair.chosen, 96)
    assert policy_chosen == pytest.approx(parent_chosen, abs=1e-3)  # trains on from the parent


def test_learning_is_real(tiny_config: Callable[..., TrainConfig], tmp_path: Path) -> None:
    pairs = bread_pairs(6)
    trained = train_policy(tiny_config(max_steps=6), None, pairs, tmp_path)
    model, tokenizer = trained.model, trained.tokenizer
    for pair in pairs[:3]:
        with using_adapter(model, None):
            before = margin(model, tokenizer, pair)
        with using_adapter(model, "default"):
            after = margin(model, tokenizer, pair)
        assert after > before + 1.0, (pair.prompt, before, after)
    assert trained.metrics["steps"] == 6
