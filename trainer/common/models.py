"""Model loading both pipelines share: where a base model's weights are, the dtype a choice
resolves to, the tokenizer of a base model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from trainer.common.config import TorchDtype


def resolve_dtype(choice: TorchDtype) -> torch.dtype:
    if choice == TorchDtype.AUTO:
        gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if gpu_bf16 else torch.float32
    return getattr(torch, choice.value)


def base_model_path(base_model: str) -> str:
    """What `from_pretrained` reads for `--base-model`: the served demo name
    (`qwen2.5-coder-0.5b-instruct`, what `conscience serve --backend local` lists) is the demo
    model's converted directory in the model cache (CONSCIENCE_LOCAL__MODEL_CACHE_DIR), found without
    any call to the model hub; a missing one is a ValueError saying how to get it. Anything
    else is passed through (a directory, or a hub id)."""
    from service.backends.local.demo import DEMO_SERVED_NAME, demo_model_dir
    from service.backends.local.loader import is_converted
    from service.settings import Settings

    if base_model != DEMO_SERVED_NAME or Path(base_model).is_dir():
        return base_model
    directory = demo_model_dir(Settings())
    if not is_converted(directory):
        raise ValueError(
            f"--base-model {base_model}: the demo model is not in {directory.parent}; "
            "prepare it once with `conscience models fetch-demo` (or `make run`)"
        )
    return str(directory)


def pretrained_kwargs(path: str) -> dict[str, Any]:
    """A model on local disk is read from there alone: no hub request (HF_HUB_OFFLINE's effect),
    so a path that lacks a file fails at once instead of retrying the network for a minute."""
    return {"local_files_only": True} if Path(path).is_dir() else {}


def load_tokenizer(base_model: str) -> Any:
    path = base_model_path(base_model)
    tokenizer = AutoTokenizer.from_pretrained(path, **pretrained_kwargs(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
