"""The sampling parameters of an OpenAI request, validated, and the next-token choice."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.backends.local.prompts import invalid
from service.core.backend import JSON

MAX_CHOICES = 16
MAX_STOP_STRINGS = 8


class SamplingRequest(BaseModel):
    """The fields of a chat or text completion body that steer generation (others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(None, ge=1, le=MAX_CHOICES)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)


@dataclass(frozen=True, slots=True)
class SamplingParams:
    temperature: float
    top_p: float
    max_new_tokens: int
    stop: tuple[str, ...]
    seed: int
    n: int
    # OpenAI's penalties over each choice's own generated tokens (not the prompt's).
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0


def sampling_params(body: JSON, *, default_max_tokens: int, room: int) -> SamplingParams:
    """Validated parameters; `room` (> 0) is how many tokens fit in the context after the prompt."""
    try:
        request = SamplingRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise invalid(f"{param}: {first['msg']}", param) from exc
    stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    if len(stop) > MAX_STOP_STRINGS or any(not item for item in stop):
        raise invalid(f"stop takes at most {MAX_STOP_STRINGS} non-empty strings", "stop")
    wanted = request.max_completion_tokens or request.max_tokens or default_max_tokens
    return SamplingParams(
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        max_new_tokens=min(wanted, room),
        stop=stop,
        seed=random.getrandbits(63) if request.seed is None else request.seed,
        n=request.n or 1,
        frequency_penalty=request.frequency_penalty or 0.0,
        presence_penalty=request.presence_penalty or 0.0,
    )


class TokenSampler:
    """Chooses next tokens for a batch of choices; seeded, so a fixed seed repeats its output.
    With a frequency or presence penalty it counts each choice's tokens so far and lowers their
    logits as OpenAI defines it: logit − frequency × count − presence × (count > 0)."""

    def __init__(self, params: SamplingParams, device: Any) -> None:
        import torch

        self._params = params
        self._generator = torch.Generator(device=device)
        self._generator.manual_seed(params.seed)
        self._counts: Any = None  # (choices, vocab) tokens generated so far, with a penalty

    def choose(self, logits: Any) -> Any:
        """`logits` is (choices, vocab); returns (choices,) token ids."""
        import torch

        tokens = self._sample(self._penalised(logits))
        if self._counts is not None:
            self._counts[torch.arange(len(tokens), device=tokens.device), tokens] += 1
        return tokens

    def _penalised(self, logits: Any) -> Any:
        import torch

        frequency, presence = self._params.frequency_penalty, self._params.presence_penalty
        if not (frequency or presence):
            return logits
        if self._counts is None:
            self._counts = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device)
        return logits.float() - frequency * self._counts - presence * (self._counts > 0).float()

    def _sample(self, logits: Any) -> Any:
        import torch

        if self._params.temperature == 0.0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits.float() / self._params.temperature, dim=-1)
        if self._params.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            # Keep the smallest head whose mass reaches top_p; the first token always survives.
            outside = sorted_probs.cumsum(dim=-1) - sorted_probs > self._params.top_p
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        return torch.multinomial(probs, 1, generator=self._generator).squeeze(-1)
