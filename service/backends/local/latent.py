"""The latent verdict's features, reading only what the frozen model has not read yet.

A windowed stream judges one conversation again and again, each time with a longer answer, and
a multi-choice request judges several answers to one conversation. The model is causal: the
hidden states of a token prefix do not change when tokens are appended. So each pass keeps its
KV cache and the probe layer's hidden state at every position, and the next pass over a token
sequence that shares a prefix with it runs only the tokens after that prefix through the model
(a longer answer: its new tokens, and the token or two its cut re-tokenises; another answer:
the answer; the same or a shorter answer: nothing). The features equal a full pass over the
whole sequence up to float rounding.

Passes are kept least-recently-used up to `max_cached_tokens` positions in all (the KV cache
costs 2 × layers × kv-heads × head-dim floats per position: 25 KB for the demo model). Models
with sliding-window layers keep only part of the past in their cache, so only their hidden
states are kept (a shorter or equal sequence is still free). Runs on the model thread only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from service.backends.local.hidden_states import AnswerSpan, answer_span, pool
from service.backends.local.loader import LoadedModel

DEFAULT_MAX_CACHED_TOKENS = 8192
# Text cut at a window's end tokenises its last token or two differently from the same text
# continued (" " then " word" becomes " word"): a longer pass that differs from a kept one only
# there extends it, and the kept one goes.
_CUT_TOKENS = 2


@dataclass(frozen=True, slots=True)
class _Pass:
    token_ids: tuple[int, ...]
    layer: int
    states: Any  # float32 [T, H]: the layer's hidden state at each position
    kv: tuple[tuple[Any, Any], ...] | None  # per decoder layer (keys, values); None: not extendable


def _shared_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    size = min(len(a), len(b))
    for index in range(size):
        if a[index] != b[index]:
            return index
    return size


class LatentRunner:
    def __init__(self, loaded: LoadedModel, *, max_cached_tokens: int = DEFAULT_MAX_CACHED_TOKENS) -> None:
        """`max_cached_tokens=0` turns the reuse off (every pass reads the whole sequence)."""
        self._loaded = loaded
        self._max_cached_tokens = max_cached_tokens
        self._passes: OrderedDict[int, _Pass] = OrderedDict()
        self._next_key = 0
        self.tokens_read = 0  # positions run through the model, over all passes (for tests, bench)

    @property
    def cached_tokens(self) -> int:
        return sum(len(entry.token_ids) for entry in self._passes.values())

    def features(
        self, messages: list[dict[str, str]], answer: str, *, layer: int, pooling: str,
        max_answer_tokens: int | None,
    ) -> tuple[list[float], AnswerSpan]:
        """One layer's pooled hidden state over the ordinary chat (hidden_states.py) as plain
        floats — what `Probe.score` takes — and the span it pooled."""
        span = answer_span(self._loaded.tokenizer, messages, answer, max_answer_tokens=max_answer_tokens)
        vector = pool(self._states(span.token_ids, layer), span, pooling)
        return [float(value) for value in vector.tolist()], span

    def _states(self, token_ids: tuple[int, ...], layer: int) -> Any:
        import torch

        best_key, shared = None, 0
        for key, entry in self._passes.items():
            if entry.layer == layer and (size := _shared_prefix(entry.token_ids, token_ids)) > shared:
                best_key, shared = key, size
        if best_key is not None and shared == len(token_ids):
            self._passes.move_to_end(best_key)
            return self._passes[best_key].states[:shared]
        base = self._passes[best_key] if best_key is not None else None
        if base is None or base.kv is None:
            base, shared = None, 0
        with torch.inference_mode():
            states, kv = self._run(token_ids, layer, base, shared)
        if base is not None and len(token_ids) > len(base.token_ids) and len(base.token_ids) - shared <= _CUT_TOKENS:
            del self._passes[best_key]  # the new pass extends it: it holds all the old one did
        self._keep(_Pass(token_ids, layer, states, kv))
        return states

    def _run(
        self, token_ids: tuple[int, ...], layer: int, base: _Pass | None, shared: int
    ) -> tuple[Any, tuple[tuple[Any, Any], ...] | None]:
        import torch
        from transformers import DynamicCache

        model = self._loaded.model
        if base is None:
            cache = DynamicCache(config=model.config)
        else:
            # A fresh cache over views of the stored tensors: the pass appends to it (new
            # tensors), so the stored pass stays as it was for other sequences that share it.
            cache = DynamicCache(ddp_cache_data=tuple((k[:, :, :shared], v[:, :, :shared]) for k, v in base.kv))
        ids = torch.tensor([token_ids[shared:]], device=model.device)
        # logits_to_keep=1: the vocabulary projection of one position only, not of every token.
        output = model(
            input_ids=ids, past_key_values=cache, use_cache=True, output_hidden_states=True, logits_to_keep=1
        )
        hidden = output.hidden_states
        if not -len(hidden) <= layer < len(hidden):
            raise ValueError(f"layers must be in 0..{len(hidden) - 1}")
        self.tokens_read += len(token_ids) - shared
        new_states = hidden[layer][0].float()
        states = new_states if base is None else torch.cat([base.states[:shared], new_states])
        if any(getattr(cached, "is_sliding", False) for cached in cache.layers):
            return states, None
        return states, tuple((cached.keys, cached.values) for cached in cache.layers)

    def _keep(self, entry: _Pass) -> None:
        if self._max_cached_tokens <= 0:
            return
        self._passes[self._next_key] = entry
        self._next_key += 1
        while self._passes and self.cached_tokens > self._max_cached_tokens:
            self._passes.popitem(last=False)
