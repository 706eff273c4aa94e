"""Load a causal LM from a Hugging Face id, a local directory or a GGUF file.

A GGUF file is de-quantised by transformers once and cached as safetensors + tokenizer under
`cache_dir`, keyed by the file's sha256, so the next start reads the converted copy in seconds
instead of converting again (most of a conversion is the tokenizer).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER_FILE = "conscience-model.json"
_CHUNK_BYTES = 8 * 1024 * 1024


class ModelLoadError(RuntimeError):
    """The model source cannot be loaded; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    model: Any  # transformers.PreTrainedModel, in eval mode on its device
    tokenizer: Any  # transformers.PreTrainedTokenizerBase with a chat template
    served_name: str


def file_sha256(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK_BYTES):
            digest.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return digest.hexdigest()


def converted_dir(cache_dir: Path, gguf_stem: str, sha256: str) -> Path:
    slug = re.sub(r"[^a-z0-9._-]+", "-", gguf_stem.lower()).strip("-")
    return cache_dir / f"{slug}-{sha256[:16]}"


def is_converted(directory: Path) -> bool:
    """The marker is written last, so its presence means a complete conversion."""
    return (directory / MARKER_FILE).is_file()


def convert_gguf(
    gguf_path: Path,
    cache_dir: Path,
    *,
    sha256: str | None = None,
    served_name: str | None = None,
    on_phase: Callable[[str], None] = lambda _: None,
) -> Path:
    """De-quantise `gguf_path` into a safetensors model directory (cached; returns its path)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    if sha256 is None:
        on_phase("hashing")
        sha256 = file_sha256(gguf_path)
    target = converted_dir(cache_dir, gguf_path.stem, sha256)
    if is_converted(target):
        return target
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        on_phase("converting the tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        on_phase("de-quantising the weights")
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent,
            gguf_file=gguf_path.name,
            dtype=torch.float32,
            # Dense weights (not GGUF blocks) are what safetensors can hold.
            quantization_config=GgufConfig(dequantize=True),
        )
        on_phase("saving the converted copy")
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        marker = {
            "source": str(gguf_path),
            "source_sha256": sha256,
            "served_name": served_name or gguf_path.stem,
        }
        (staging / MARKER_FILE).write_text(json.dumps(marker, indent=2))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _served_name(directory: Path) -> str:
    marker = directory / MARKER_FILE
    if marker.is_file():
        return str(json.loads(marker.read_text())["served_name"])
    return directory.name


def _resolve(source: str, cache_dir: Path) -> tuple[str, str, bool]:
    """(what from_pretrained reads, served name, whether it is on local disk)."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(f"{source}: a model file must be a .gguf file")
        directory = convert_gguf(path, cache_dir)
        return str(directory), _served_name(directory), True
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{source}: not a model directory (no config.json)")
        return str(path), _served_name(path), True
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ModelLoadError(f"{source}: no such file or directory")
    return source, source, False


def load_model(
    source: str,
    *,
    cache_dir: Path,
    device: str = "cpu",
    dtype: str = "float32",
    served_name: str | None = None,
) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ModelLoadError(f"unknown torch dtype {dtype!r} (try float32 or bfloat16)")
    location, default_name, local = _resolve(source, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype=torch_dtype, local_files_only=local
        )
    except OSError as exc:
        raise ModelLoadError(
            f"cannot load model {source!r}: {exc}. Without network, pass a local directory or "
            "a .gguf file, or run `conscience models fetch-demo`."
        ) from exc
    if not tokenizer.chat_template:
        raise ModelLoadError(f"model {source!r} has no chat template; use an instruct model")
    model.to(device).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, served_name=served_name or default_name)
