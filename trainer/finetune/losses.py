"""The two terms of the fine-tuning loss, differentiable, over padded batches of chat examples.

A completion's tokens start where the tokenised prompt (with the generation prompt) and the
tokenised prompt + answer diverge, as in TRL and in trainer/common/scoring.py; only those tokens carry
labels. Sequences keep their start when longer than `max_length`, as in training elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from service.store.preference import Message
from trainer.common.scoring import chat_ids

IGNORED = -100  # label of a token the loss does not count


@dataclass(frozen=True)
class TokenBatch:
    input_ids: torch.Tensor  # (batch, length), right-padded
    attention_mask: torch.Tensor
    labels: torch.Tensor  # input_ids where a completion token, IGNORED elsewhere


def _completion_start(prompt_ids: list[int], full_ids: list[int]) -> int:
    shared = 0
    for a, b in zip(prompt_ids, full_ids, strict=False):
        if a != b:
            break
        shared += 1
    return max(shared, 1)  # token 0 has no prediction


def encode_completions(
    tokenizer: Any, prompts: Sequence[list[Message]], completions: Sequence[str], max_length: int
) -> TokenBatch:
    rows, labels = [], []
    for prompt, completion in zip(prompts, completions, strict=True):
        prompt_ids = chat_ids(tokenizer, prompt, add_generation_prompt=True)
        full_ids = chat_ids(
            tokenizer, [*prompt, {"role": "assistant", "content": completion}], add_generation_prompt=False
        )[:max_length]
        start = min(_completion_start(prompt_ids, full_ids), len(full_ids))
        rows.append(full_ids)
        labels.append([IGNORED] * start + full_ids[start:])
    width = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return TokenBatch(
        input_ids=torch.tensor([row + [pad] * (width - len(row)) for row in rows]),
        attention_mask=torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows]),
        labels=torch.tensor([label + [IGNORED] * (width - len(label)) for label in labels]),
    )


def _token_logprobs(model: Any, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position log p(label) (batch, length - 1) and the mask of labelled positions."""
    device = model.device
    logits = model(
        input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)
    ).logits[:, :-1].float()
    targets = batch.labels[:, 1:].to(device)
    counted = targets != IGNORED
    gathered = torch.log_softmax(logits, dim=-1).gather(
        2, targets.clamp(min=0).unsqueeze(-1)
    ).squeeze(-1)
    return gathered * counted, counted


def completion_logprobs(model: Any, batch: TokenBatch) -> torch.Tensor:
    """log p(completion | prompt) per row, summed over the completion's tokens."""
    logprobs, _ = _token_logprobs(model, batch)
    return logprobs.sum(dim=-1)


def sft_loss(model: Any, batch: TokenBatch) -> torch.Tensor:
    """Mean next-token cross-entropy over every completion token of the batch."""
    logprobs, counted = _token_logprobs(model, batch)
    return -logprobs.sum() / counted.sum().clamp(min=1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """The sigmoid DPO loss, mean over pairs: -log σ(β · (chosen log-ratio − rejected log-ratio))."""
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    return -F.logsigmoid(beta * margin).mean()
