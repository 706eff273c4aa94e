"""DPO on LoRA with TRL, against the frozen base model as the reference policy.

The reference is the base model with adapters disabled: no second copy of the weights (the
paper's frozen copy is the very model the proxy judges with). TRL does this by itself for a
fresh adapter, but when handed a PeftModel with a pretrained adapter it copies that adapter to
a "ref" adapter and uses it as the reference. We continue from the active adapter and still
want the base as the reference, so the copy is deleted right after the trainer is built, which
sends TRL back to its adapters-disabled path (`use_adapter(model, None)`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, PrinterCallback, TrainerCallback, set_seed
from trl import DPOConfig, DPOTrainer

from trainer.common.models import base_model_path, load_tokenizer, pretrained_kwargs, resolve_dtype
from trainer.nightly.config import TrainConfig
from trainer.nightly.dataset import PreferencePair, to_hf_dataset

TRAINED_ADAPTER = "default"
_TRL_REFERENCE_COPY = "ref"


@dataclass
class TrainedPolicy:
    model: PeftModel  # adapter "default" is the newly trained one
    tokenizer: Any
    metrics: dict[str, Any]


def load_policy(config: TrainConfig, parent_adapter: Path | None) -> PeftModel:
    """The base model with a trainable LoRA: the parent's weights, or a fresh (zero-effect) one."""
    set_seed(config.seed)  # before LoRA initialisation, for a reproducible run
    path = base_model_path(config.base_model)
    base = AutoModelForCausalLM.from_pretrained(
        path, dtype=resolve_dtype(config.dtype), **pretrained_kwargs(path)
    )
    if parent_adapter is not None:
        return PeftModel.from_pretrained(base, parent_adapter, is_trainable=True)
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        # DPO runs without dropout (TRL's disable_dropout): the log-ratios of policy and
        # reference must come from the same deterministic network.
        lora_dropout=0.0,
        target_modules=list(config.lora_target_modules),
        bias="none",
    )
    return get_peft_model(base, lora)


def dpo_arguments(config: TrainConfig, output_dir: Path) -> DPOConfig:
    with_sft = config.sft_weight > 0
    return DPOConfig(
        output_dir=str(output_dir),
        beta=config.beta,
        loss_type=["sigmoid", "sft"] if with_sft else ["sigmoid"],
        loss_weights=[1.0, config.sft_weight] if with_sft else None,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        max_length=config.max_length,
        seed=config.seed,
        # The weights' dtype is chosen at load time; TRL's defaults (bf16 autocast, gradient
        # checkpointing) assume a GPU and break or crawl on CPU.
        bf16=False,
        fp16=False,
        gradient_checkpointing=config.gradient_checkpointing,
        use_cpu=not torch.cuda.is_available(),
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def build_dpo_trainer(
    config: TrainConfig,
    model: PeftModel,
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    output_dir: Path,
    callbacks: Sequence[TrainerCallback] = (),
) -> DPOTrainer:
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=dpo_arguments(config, output_dir),
        train_dataset=to_hf_dataset(pairs),
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)  # our progress callback reports instead
    policy = trainer.accelerator.unwrap_model(trainer.model)
    if _TRL_REFERENCE_COPY in policy.peft_config:
        policy.delete_adapter(_TRL_REFERENCE_COPY)
    return trainer


def train_policy(
    config: TrainConfig,
    parent_adapter: Path | None,
    pairs: Sequence[PreferencePair],
    work_dir: Path,
    callbacks: Sequence[TrainerCallback] = (),
) -> TrainedPolicy:
    tokenizer = load_tokenizer(config.base_model)
    model = load_policy(config, parent_adapter)
    trainer = build_dpo_trainer(config, model, tokenizer, pairs, work_dir, callbacks)
    output = trainer.train()
    last_log = next(
        (entry for entry in reversed(trainer.state.log_history) if "rewards/margins" in entry), {}
    )
    metrics = {
        "steps": output.global_step,
        "train_loss": output.training_loss,
        "train_pairs": len(pairs),
        "runtime_s": output.metrics["train_runtime"],
        "pairs_per_s": output.metrics["train_samples_per_second"],
        "final": {
            key: value for key, value in last_log.items() if key.startswith(("loss", "rewards/"))
        },
    }
    policy = trainer.accelerator.unwrap_model(trainer.model)
    policy.eval()
    return TrainedPolicy(model=policy, tokenizer=tokenizer, metrics=metrics)


def save_adapter(model: PeftModel, directory: Path) -> None:
    """PEFT format: adapter_config.json + adapter_model.safetensors, the trained adapter only."""
    model.save_pretrained(directory, selected_adapters=[TRAINED_ADAPTER])
