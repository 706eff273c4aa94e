"""Model loading both pipelines share: the dtype a choice resolves to, the tokenizer of a base model."""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoTokenizer

from trainer.common.config import TorchDtype


def resolve_dtype(choice: TorchDtype) -> torch.dtype:
    if choice == TorchDtype.AUTO:
        gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if gpu_bf16 else torch.float32
    return getattr(torch, choice.value)


def load_tokenizer(base_model: str) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
