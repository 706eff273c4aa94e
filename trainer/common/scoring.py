"""Measuring a model directly: completion log-probabilities and greedy replies, per adapter.

Used by the evaluation gate and by the tests that check learning is real; it shares no code
with TRL's training loss, so it is an independent measurement of what training did.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

Messages = list[dict[str, str]]


def chat_ids(tokenizer: Any, messages: Messages, *, add_generation_prompt: bool) -> list[int]:
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=add_generation_prompt
    )
    return list(encoded["input_ids"])


def _common_prefix_length(first: list[int], second: list[int]) -> int:
    length = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        length += 1
    return length


@torch.no_grad()
def completion_logprob(
    model: Any, tokenizer: Any, prompt: Messages, completion: str, max_length: int
) -> float:
    """log p(completion | prompt) under the chat template, summed over the completion tokens.

    The completion starts where the tokenised prompt and prompt+answer diverge (as in TRL), and
    the sequence keeps its start when longer than `max_length`, as in training.
    """
    prompt_ids = chat_ids(tokenizer, prompt, add_generation_prompt=True)
    answered = [*prompt, {"role": "assistant", "content": completion}]
    full_ids = chat_ids(tokenizer, answered, add_generation_prompt=False)[:max_length]
    # Token 0 has no prediction, so a completion starts at position 1 at the earliest.
    start = max(_common_prefix_length(prompt_ids, full_ids), 1)
    if start >= len(full_ids):
        return 0.0
    input_ids = torch.tensor([full_ids], device=model.device)
    logits = model(input_ids=input_ids).logits[0, :-1].float()
    token_logprobs = torch.log_softmax(logits, dim=-1).gather(1, input_ids[0, 1:, None])[:, 0]
    return float(token_logprobs[start - 1 :].sum())


@torch.no_grad()
def greedy_reply(model: Any, tokenizer: Any, prompt: Messages, max_new_tokens: int) -> str:
    prompt_ids = chat_ids(tokenizer, prompt, add_generation_prompt=True)
    input_ids = torch.tensor([prompt_ids], device=model.device)
    output = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.decode(output[0, len(prompt_ids) :], skip_special_tokens=True)


@torch.no_grad()
def greedy_replies(model: Any, tokenizer: Any, prompts: list[Messages], max_new_tokens: int) -> list[str]:
    """`greedy_reply` for several prompts in one batch (left-padded, so every row's answer starts
    at the same position): on a CPU one batch of 8 costs little more than one prompt."""
    rows = [chat_ids(tokenizer, prompt, add_generation_prompt=True) for prompt in prompts]
    width = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows], device=model.device)
    attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows], device=model.device)
    output = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
        do_sample=False, pad_token_id=pad,
    )
    return [tokenizer.decode(row[width:], skip_special_tokens=True) for row in output]


@contextmanager
def using_adapter(model: Any, adapter: str | None) -> Iterator[None]:
    """Run a PeftModel with one named adapter active, or the base weights when `adapter` is None."""
    if adapter is None:
        with model.disable_adapter():
            yield
        return
    previous = model.active_adapter
    model.set_adapter(adapter)
    try:
        yield
    finally:
        model.set_adapter(previous)
