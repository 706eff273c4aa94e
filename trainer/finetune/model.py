"""The model of `conscience finetune`: the base weights with one trainable LoRA adapter.

The adapter is attached through transformers' own PEFT integration (not a PeftModel wrapper) so
that the embedded engine can switch it on and off exactly as it does for a served adapter;
only the LoRA weights train.
"""

from __future__ import annotations

from peft import LoraConfig
from transformers import AutoModelForCausalLM, set_seed

from service.backends.local.loader import LoadedModel
from trainer.common.models import base_model_path, load_tokenizer, pretrained_kwargs, resolve_dtype
from trainer.finetune.config import FinetuneConfig

POLICY_ADAPTER = "policy"
# The frozen base's name inside the engine: requests for it run with adapters disabled.
BASE_NAME = "base"


def load_policy_model(config: FinetuneConfig) -> LoadedModel:
    """Blocking: loads the weights and adds a fresh (zero-effect) LoRA adapter."""
    set_seed(config.seed)  # before LoRA initialisation, for a reproducible run
    tokenizer = load_tokenizer(config.base_model)
    path = base_model_path(config.base_model)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(config.dtype), **pretrained_kwargs(path))
    model.add_adapter(
        LoraConfig(
            task_type="CAUSAL_LM",
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_target_modules),
            bias="none",
        ),
        adapter_name=POLICY_ADAPTER,
    )
    for name, parameter in model.named_parameters():
        parameter.requires_grad = "lora_" in name
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, served_name=BASE_NAME)
