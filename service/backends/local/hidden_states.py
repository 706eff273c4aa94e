"""Pooled hidden states of the frozen model: the features a latent probe reads.

One forward pass over the ordinary chat — the conversation (system turn as the model's template
writes it, user turn(s)), then the answer as the assistant turn — with `output_hidden_states`.

Token positions (`AnswerSpan`):
- the prompt is the templated conversation *with* the generation prompt
  (`...<|im_start|>assistant\\n` for Qwen), tokenised on its own;
- the answer is the answer text tokenised on its own and appended, cut to `max_answer_tokens`
  (its first tokens are kept), so the ids are exactly what the engine holds after generating it
  (prompt ids + generated ids), with no BPE merge across the boundary;
- no end-of-turn token is appended; `mean_answer` averages the answer's positions
  `[prompt_len, prompt_len + answer_len)`, `mean_all` averages every position (system, user,
  generation prompt and answer), and `mean_all_l2` scales that to unit length — what an upstream
  embeddings endpoint with mean pooling over the same templated text returns.

Layers are numbered as transformers' `hidden_states` tuple: 0 is the embedding output, `i` the
output of decoder layer `i`, and the last (`num_hidden_layers`) is the final layer *after* the
model's final norm — the hidden state an embeddings endpoint pools.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.backends.local.loader import LoadedModel
from service.backends.local.prompts import chat_text, encode
from service.conscience.probe import POOLINGS

DEFAULT_MAX_ANSWER_TOKENS = 384


@dataclass(frozen=True, slots=True)
class AnswerSpan:
    token_ids: tuple[int, ...]
    prompt_len: int  # positions [0, prompt_len) are the templated conversation
    answer_len: int  # positions [prompt_len, prompt_len + answer_len) are the answer's tokens


def answer_span(
    tokenizer: Any,
    messages: list[dict[str, str]],
    answer: str,
    *,
    max_answer_tokens: int | None = DEFAULT_MAX_ANSWER_TOKENS,
) -> AnswerSpan:
    prompt_ids = encode(tokenizer, chat_text(tokenizer, messages, generation_prompt=True))
    answer_ids = encode(tokenizer, answer)
    if max_answer_tokens is not None:
        answer_ids = answer_ids[:max_answer_tokens]
    return AnswerSpan(tuple(prompt_ids + answer_ids), len(prompt_ids), len(answer_ids))


def num_layers(loaded: LoadedModel) -> int:
    """The index of the final (normed) hidden state; valid layers are 0..num_layers."""
    return int(loaded.model.config.num_hidden_layers)


def pool(states: Any, span: AnswerSpan, pooling: str) -> Any:
    """Hidden states `[..., T, H]` over `span`'s positions -> `[..., H]` by `pooling` (one of
    service.conscience.probe.POOLINGS). An empty answer pools to the last prompt position for
    `mean_answer` (the state the answer would start from); `mean_all_l2` is `mean_all` scaled
    to unit length (what an embeddings endpoint with mean pooling returns)."""
    if pooling in ("mean_all", "mean_all_l2"):
        vector = states.mean(dim=-2)
        if pooling == "mean_all_l2":
            vector = vector / vector.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return vector
    if pooling != "mean_answer":
        raise ValueError(f"unknown pooling {pooling!r}; one of {POOLINGS}")
    if span.answer_len == 0:
        return states[..., span.prompt_len - 1, :]
    return states[..., span.prompt_len : span.prompt_len + span.answer_len, :].mean(dim=-2)


def pooled_hidden_states(
    loaded: LoadedModel,
    messages: list[dict[str, str]],
    answer: str,
    *,
    layers: Sequence[int] | None = None,
    poolings: Sequence[str] = POOLINGS,
    max_answer_tokens: int | None = DEFAULT_MAX_ANSWER_TOKENS,
) -> dict[str, Any]:
    """{pooling: float32 tensor [len(layers), hidden_size]} from one forward pass (no grad);
    `layers=None` means every hidden state (0..num_layers)."""
    import torch

    for pooling in poolings:
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; one of {POOLINGS}")
    span = answer_span(loaded.tokenizer, messages, answer, max_answer_tokens=max_answer_tokens)
    wanted = list(range(num_layers(loaded) + 1)) if layers is None else list(layers)
    ids = torch.tensor([span.token_ids], device=loaded.model.device)
    with torch.inference_mode():
        # logits_to_keep=1: the vocabulary projection of one position only, not of every token.
        output = loaded.model(input_ids=ids, use_cache=False, output_hidden_states=True, logits_to_keep=1)
    states = output.hidden_states
    if not all(-len(states) <= layer < len(states) for layer in wanted):
        raise ValueError(f"layers must be in 0..{len(states) - 1}")
    stacked = torch.stack([states[layer][0] for layer in wanted]).float()  # [L, T, H]
    return {pooling: pool(stacked, span, pooling) for pooling in poolings}


def tensor_digests(loaded: LoadedModel) -> dict[str, str]:
    """sha256 of each sampled weight tensor (service.conscience.probe.FINGERPRINT_TENSORS), taken
    in bfloat16 so float32 and bfloat16 loads of the same weights agree. With a LoRA adapter
    loaded, the base weights are read (peft keeps them apart until merged)."""
    import hashlib

    import torch

    from service.conscience.probe import FINGERPRINT_TENSORS

    last = num_layers(loaded) - 1
    params = {}
    for name, tensor in loaded.model.named_parameters():
        # peft prefixes ("base_model.model.") and wraps base weights ("....base_layer.weight").
        plain = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        params.setdefault(plain, tensor)
    digests = {}
    for pattern, rows in FINGERPRINT_TENSORS:
        name = pattern.format(last=last)
        if name not in params:
            continue
        tensor = params[name].detach()
        if rows is not None:
            tensor = tensor[:rows]
        raw = tensor.to(device="cpu", dtype=torch.bfloat16).contiguous().view(torch.int16)
        digests[name] = hashlib.sha256(raw.numpy().tobytes()).hexdigest()
    if not digests:
        raise ValueError("none of the fingerprint tensors is a parameter of this model")
    return digests


def model_fingerprint(loaded: LoadedModel) -> str:
    from service.conscience.probe import fingerprint

    return fingerprint(loaded.model.config.to_dict(), tensor_digests(loaded))
