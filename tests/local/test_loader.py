"""The loader: GGUF files are converted once into a cache keyed by their hash; bad sources fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.backends.local.loader import MARKER_FILE, ModelLoadError, file_sha256, load_model
from tests.local.gguf_writer import write_gguf


def logits(model: object, ids: list[int]) -> object:
    import torch

    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits  # type: ignore[operator]


def test_a_gguf_file_is_converted_once_and_loads_like_its_source(
    tiny_model_dir: Path, endless_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = write_gguf(tiny_model_dir, tmp_path / "tiny-chat.gguf")
    cache = tmp_path / "cache"

    first = load_model(str(gguf_path), cache_dir=cache)

    [converted] = [path for path in cache.iterdir() if (path / MARKER_FILE).is_file()]
    assert converted.name == f"tiny-chat-{file_sha256(gguf_path)[:16]}"
    assert first.served_name == "tiny-chat"
    source = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = [1, 40, 41, 42, 2]
    assert (logits(first.model, ids) - logits(source, ids)).abs().max().item() < 1e-6
    source_tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    chat = [{"role": "user", "content": "How do I bake bread?"}]
    expected = source_tokenizer.apply_chat_template(chat, tokenize=False)
    assert first.tokenizer.apply_chat_template(chat, tokenize=False) == expected
    assert first.tokenizer("robot harm")["input_ids"] == source_tokenizer("robot harm")["input_ids"]

    weights = converted / "model.safetensors"
    converted_at = weights.stat().st_mtime_ns
    again = load_model(str(gguf_path), cache_dir=cache)
    assert weights.stat().st_mtime_ns == converted_at  # reused, not converted again
    assert again.served_name == "tiny-chat"

    write_gguf(endless_model_dir, gguf_path)  # new content under the same file name
    changed = load_model(str(gguf_path), cache_dir=cache)
    assert len([path for path in cache.iterdir() if (path / MARKER_FILE).is_file()]) == 2
    assert (logits(changed.model, ids) - logits(first.model, ids)).abs().max().item() > 0


def test_a_model_directory_is_served_under_its_name(tiny_model_dir: Path, tmp_path: Path) -> None:
    loaded = load_model(str(tiny_model_dir), cache_dir=tmp_path, served_name="tiny-judge")
    assert loaded.served_name == "tiny-judge"
    assert load_model(str(tiny_model_dir), cache_dir=tmp_path).served_name == tiny_model_dir.name
    assert not loaded.model.training


@pytest.mark.parametrize(
    ("make_source", "message"),
    [
        (lambda tmp: tmp / "weights.bin", "must be a .gguf file"),
        (lambda tmp: tmp, "no config.json"),
        (lambda tmp: tmp / "missing" / "model", "no such file or directory"),
        (lambda tmp: "./no-such-model-dir", "no such file or directory"),
    ],
)
def test_bad_sources_fail_with_a_clear_message(make_source: object, message: str, tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    source = make_source(tmp_path)  # type: ignore[operator]
    with pytest.raises(ModelLoadError, match=message):
        load_model(str(source), cache_dir=tmp_path / "cache")


def test_an_unknown_dtype_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="dtype"):
        load_model(str(tiny_model_dir), cache_dir=tmp_path, dtype="float7")
