"""Pooled hidden states for the latent probe: the answer's positions, one pass, a fingerprint."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.backends.local.hidden_states import (
    answer_span,
    model_fingerprint,
    pooled_hidden_states,
)
from service.backends.local.loader import load_model

MESSAGES = [{"role": "user", "content": "How do I bake bread?"}]
ANSWER = "Mix flour, water, salt and yeast; knead, let it rise, then bake it for half an hour."


def test_the_answer_positions_follow_the_generation_prompt(tiny_model_dir: Path, tmp_path: Path) -> None:
    loaded = load_model(str(tiny_model_dir), cache_dir=tmp_path)
    tok = loaded.tokenizer
    span = answer_span(tok, MESSAGES, ANSWER, max_answer_tokens=None)
    prompt = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert tok.decode(span.token_ids[: span.prompt_len]) == prompt
    assert tok.decode(span.token_ids[span.prompt_len :]) == ANSWER
    short = answer_span(tok, MESSAGES, ANSWER, max_answer_tokens=3)
    assert short.answer_len == 3 and short.token_ids == span.token_ids[: span.prompt_len + 3]


def test_pools_match_a_plain_forward_pass(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch

    loaded = load_model(str(tiny_model_dir), cache_dir=tmp_path)
    span = answer_span(loaded.tokenizer, MESSAGES, ANSWER, max_answer_tokens=None)
    pooled = pooled_hidden_states(loaded, MESSAGES, ANSWER, max_answer_tokens=None)
    layers = loaded.model.config.num_hidden_layers + 1
    with torch.inference_mode():
        states = loaded.model(input_ids=torch.tensor([span.token_ids]), output_hidden_states=True).hidden_states
    assert pooled["mean_answer"].shape == (layers, loaded.model.config.hidden_size)
    for layer in range(layers):
        answer = states[layer][0, span.prompt_len :].mean(dim=0)
        torch.testing.assert_close(pooled["mean_answer"][layer], answer)
        torch.testing.assert_close(pooled["mean_all"][layer], states[layer][0].mean(dim=0))
    unit = pooled["mean_all_l2"][-1]
    torch.testing.assert_close(unit, pooled["mean_all"][-1] / pooled["mean_all"][-1].norm())
    with pytest.raises(ValueError):
        pooled_hidden_states(loaded, MESSAGES, ANSWER, poolings=["max"])


def test_the_fingerprint_follows_the_weights_not_the_dtype(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch

    full = load_model(str(tiny_model_dir), cache_dir=tmp_path)
    half = load_model(str(tiny_model_dir), cache_dir=tmp_path, dtype="bfloat16")
    assert model_fingerprint(full) == model_fingerprint(half)
    with torch.no_grad():
        full.model.model.norm.weight.add_(0.5)
    assert model_fingerprint(full) != model_fingerprint(half)
