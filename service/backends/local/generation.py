"""One generation request on the model thread: prefill, then one token per scheduler round.

The `n` choices of a request share one prompt, so the prompt is read once and its KV cache
repeated across a batch of `n` rows; each row samples on its own and finishes on its own
(end of sequence, a stop string, or the token budget), or is stopped by its reader (`stopped`:
a repair's raced draft that lost, service/conscience/engine.py). A generation on the base weights may
record what it reads for the latent verdict (`reads`: service/backends/local/latent.py), and
may be steered (`steering`: service/backends/local/steering.py) — then it records nothing, as its
states are not the frozen model's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from service.backends.local.adapters import AdapterSlots
from service.backends.local.detokenize import ChoiceText
from service.backends.local.latent import ReadLog
from service.backends.local.loader import LoadedModel
from service.backends.local.sampling import SamplingParams, TokenSampler
from service.backends.local.steering import Steering


@dataclass(frozen=True, slots=True)
class ChoiceDelta:
    index: int
    text: str
    finish_reason: str | None  # set on a choice's last delta: "stop" or "length"
    tokens: int  # the choice's completion tokens so far (text held back for a stop string included)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


Event = list[ChoiceDelta] | Usage | BaseException


class EventChannel:
    """Carries events from the model thread to the coroutine that waits for them."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    def send(self, event: Event) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the event loop is closed; nobody is listening
            pass

    async def receive(self) -> Event:
        return await self._queue.get()


def stop_token_ids(loaded: LoadedModel) -> frozenset[int]:
    """End-of-sequence ids from the generation config and the tokenizer (ChatML ends turns)."""
    configured = loaded.model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(loaded.tokenizer.eos_token_id)
    return frozenset(token for token in ids if token is not None)


@dataclass(slots=True)
class _Choice:
    text: ChoiceText
    tokens: int = 0
    finish_reason: str | None = None


class GenerationJob:
    def __init__(
        self,
        *,
        loaded: LoadedModel,
        adapters: AdapterSlots,
        adapter: str | None,
        stop_ids: frozenset[int],
        prompt_ids: list[int],
        params: SamplingParams,
        first_index: int,
        channel: EventChannel,
        on_release: Callable[[], None],
        reads: ReadLog | None = None,
        stopped: Collection[int] = frozenset(),
        steering: Steering | None = None,
    ) -> None:
        """`reads`: the latent verdict's log of this generation's hidden states (base weights only).
        `stopped`: choice indices (numbered as the deltas are) whose reader has stopped them; read
        on the model thread at each step, they end there without a further delta. `steering`:
        applied to every forward pass of this generation, prefill and decode, and to no other;
        it takes no `reads`, since the latent verdict must read the model unsteered."""
        if steering is not None and reads is not None:
            raise ValueError("a steered generation's hidden states are not the frozen model's: it records no reads")
        self.cancelled = False
        self._model = loaded.model
        self._adapters = adapters
        self._adapter = adapter
        self._stop_ids = stop_ids
        self._prompt_ids = prompt_ids
        self._params = params
        self._first_index = first_index
        self._channel = channel
        self._on_release = on_release
        self._reads = reads
        self._stopped = stopped
        self._choices = [_Choice(ChoiceText(loaded.tokenizer, params.stop)) for _ in range(params.n)]
        self._cache: Any = None
        self._last: Any = None
        self._sampler = TokenSampler(params, loaded.model.device)
        self._steering = steering

    def step(self) -> bool:
        import torch

        self._adapters.use(self._adapter)
        steered = self._steering.hooked() if self._steering is not None else contextlib.nullcontext()
        with torch.inference_mode(), steered:
            logits = self._prefill() if self._cache is None else self._decode()
            tokens = self._sampler.choose(logits)
        self._last = tokens
        deltas = [
            delta
            for index, token in enumerate(tokens.tolist())
            if (delta := self._advance(index, token)) is not None
        ]
        if deltas:
            self._channel.send(deltas)
        if all(choice.finish_reason for choice in self._choices):
            completion = sum(choice.tokens for choice in self._choices)
            self._channel.send(Usage(len(self._prompt_ids), completion))
            return True
        return False

    @property
    def last_tokens(self) -> list[int]:
        """The token each choice's row chose at the last step (bench/engine_speed.py compares them)."""
        return [] if self._last is None else self._last.tolist()

    def fail(self, error: BaseException) -> None:
        self._channel.send(error)

    def release(self) -> None:
        if self._reads is not None:
            self._reads.close()
        self._cache = None
        self._on_release()

    def _prefill(self) -> Any:
        import torch
        from transformers import DynamicCache

        self._cache = DynamicCache(config=self._model.config)
        prompt = torch.tensor([self._prompt_ids], device=self._model.device)
        output = self._model(
            input_ids=prompt, past_key_values=self._cache, use_cache=True, logits_to_keep=1,
            output_hidden_states=self._reads is not None,
        )
        if self._reads is not None:
            self._reads.prefill(self._prompt_ids, output.hidden_states, self._cache, self._params.n)
        logits = output.logits[:, -1, :]
        if self._params.n > 1:
            self._cache.batch_repeat_interleave(self._params.n)
            logits = logits.expand(self._params.n, -1)
        return logits

    def _decode(self) -> Any:
        output = self._model(
            input_ids=self._last[:, None], past_key_values=self._cache, use_cache=True,
            output_hidden_states=self._reads is not None,
        )
        if self._reads is not None:
            self._reads.decode(self._last.tolist(), output.hidden_states)
        return output.logits[:, -1, :]

    def _advance(self, index: int, token: int) -> ChoiceDelta | None:
        choice = self._choices[index]
        if choice.finish_reason:  # finished rows keep decoding with the batch; their output is dropped
            return None
        if self._first_index + index in self._stopped:
            choice.finish_reason = "stop"  # nobody reads it: no delta
            return None
        choice.tokens += 1
        if token in self._stop_ids:
            return self._finish(index, "stop")
        text = choice.text.push(token)
        if choice.text.stopped:
            return self._finish(index, "stop", text)
        if choice.tokens >= self._params.max_new_tokens:
            return self._finish(index, "length", text)
        return ChoiceDelta(self._first_index + index, text, None, choice.tokens) if text else None

    def _finish(self, index: int, reason: str, text: str = "") -> ChoiceDelta:
        choice = self._choices[index]
        choice.finish_reason = reason
        return ChoiceDelta(self._first_index + index, text + choice.text.finish(), reason, choice.tokens)
