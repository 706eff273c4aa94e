"""The latent verdict's features, reading only what the frozen model has not read yet.

A windowed stream judges one conversation again and again, each time with a longer answer, and
a multi-choice request judges several answers to one conversation. The model is causal: the
hidden states of a token prefix do not change when tokens are appended. So each pass keeps its
KV cache and the probe layers' hidden states at every position, and the next pass over a token
sequence that shares a prefix with it runs only the tokens after that prefix through the model
(a longer answer: its new tokens, and the token or two its cut re-tokenises; another answer:
the answer; the same or a shorter answer: nothing). The features equal a full pass over the
whole sequence up to float rounding.

Passes are kept least-recently-used up to `max_cached_tokens` positions in all (the KV cache
costs 2 × layers × kv-heads × head-dim floats per position: 25 KB for the demo model). Models
with sliding-window layers keep only part of the past in their cache, so only their hidden
states are kept (a shorter or equal sequence is still free). Runs on the model thread only.

A generation on the base weights (the frozen model: the demo's policy until an adapter is
active) reads exactly the ordinary chat the latent verdict reads — the templated conversation,
then the answer's tokens. It records the probe layers' states as it goes (`track`: a `ReadLog`),
and the runner counts what it has read as a pass: the verdict on a streamed window, or on the
finished answer, then reads only the token or two its cut re-tokenises, instead of the whole
chat. A finished generation's log is kept like any pass.
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
    layers: tuple[int, ...]
    states: Any  # float32 [T, len(layers) * H]: the layers' hidden states at each position, concatenated
    kv: tuple[tuple[Any, Any], ...] | None  # per decoder layer (keys, values); None: not extendable


def _read(hidden_states: Any, layers: tuple[int, ...], positions: Any) -> Any:
    """The `layers`' hidden states at `positions` (an index of the `[rows, T, H]` tensors),
    concatenated along the feature axis, as float32."""
    if not all(-len(hidden_states) <= layer < len(hidden_states) for layer in layers):
        raise ValueError(f"layers must be in 0..{len(hidden_states) - 1}")
    import torch

    return torch.cat([hidden_states[layer][positions] for layer in layers], dim=-1).float()


def _shared_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    size = min(len(a), len(b))
    for index in range(size):
        if a[index] != b[index]:
            return index
    return size


def _kv_rows(cache: Any, row: int, length: int, *, copied: bool) -> tuple[tuple[Any, Any], ...] | None:
    """One batch row's keys and values for the first `length` positions (None for a model with
    sliding-window layers, whose cache does not hold the whole past): views while the
    generation goes on (the cache appends by concatenation, so they stay as they are), or
    `copied` into tensors of their own for a pass that outlives it, since a view of one row
    would hold every row's storage, more than the kept tokens count."""
    if any(getattr(cached, "is_sliding", False) for cached in cache.layers):
        return None
    rows = tuple(
        (cached.keys[row : row + 1, :, :length], cached.values[row : row + 1, :, :length])
        for cached in cache.layers
    )
    return tuple((keys.clone(), values.clone()) for keys, values in rows) if copied else rows


class ReadLog:
    """What one generation on the base weights has read so far: its prompt, then the token
    each row fed at each step, with the probe layers' hidden states at every position. Filled
    by the generation job on the model thread (`prefill`, then `decode` per step, `close` when
    it leaves the scheduler); the runner sees it from its prefill on."""

    def __init__(self, layers: tuple[int, ...], runner: LatentRunner) -> None:
        self.layers = layers
        self._runner = runner
        self._prompt: tuple[int, ...] = ()
        self._prompt_states: Any = None  # [T, len(layers) * H]
        self._fed: list[list[int]] = []  # per step, each row's token
        self._step_states: list[Any] = []  # per step, [rows, len(layers) * H]
        self._cache: Any = None
        self._rows = 1

    def prefill(self, prompt_ids: list[int], hidden_states: Any, cache: Any, rows: int) -> None:
        self._prompt = tuple(prompt_ids)
        self._prompt_states = _read(hidden_states, self.layers, 0)
        self._cache, self._rows = cache, rows
        self._runner.opened(self)

    def decode(self, fed: list[int], hidden_states: Any) -> None:
        self._fed.append(fed)
        self._step_states.append(_read(hidden_states, self.layers, (slice(None), -1)))

    def passes(self, *, kept: bool = False) -> list[_Pass]:
        """One pass per row, over every position read so far; `kept`: to outlive the
        generation, each row's cache in tensors of its own (one row's needs no copy)."""
        import torch

        if self._prompt_states is None:
            return []
        steps = torch.stack(self._step_states) if self._step_states else None  # [S, rows, H]
        length = len(self._prompt) + len(self._fed)
        found = []
        for row in range(self._rows):
            ids = self._prompt + tuple(step[row] for step in self._fed)
            states = self._prompt_states if steps is None else torch.cat([self._prompt_states, steps[:, row]])
            kv = _kv_rows(self._cache, row, length, copied=kept and self._rows > 1)
            found.append(_Pass(ids, self.layers, states, kv))
        return found

    def close(self) -> None:
        """The generation is over (finished, failed or cancelled): its passes are kept."""
        self._runner.closed(self)


class LatentRunner:
    def __init__(self, loaded: LoadedModel, *, max_cached_tokens: int = DEFAULT_MAX_CACHED_TOKENS) -> None:
        """`max_cached_tokens=0` turns the reuse off (every pass reads the whole sequence, and
        generations keep no log)."""
        self._loaded = loaded
        self._max_cached_tokens = max_cached_tokens
        self._passes: OrderedDict[int, _Pass] = OrderedDict()
        self._next_key = 0
        self._live: list[ReadLog] = []
        self.tokens_read = 0  # positions run through the model, over all passes (for tests, bench)

    def track(self, layers: tuple[int, ...]) -> ReadLog | None:
        """A log for a generation on the base weights to fill; once it has read its prompt,
        its passes count as read. Safe to call from any thread (the log registers itself on
        the model thread)."""
        return None if self._max_cached_tokens <= 0 else ReadLog(tuple(layers), self)

    def opened(self, log: ReadLog) -> None:
        """`log`'s prefill is done: from now on its passes are candidates."""
        self._live.append(log)

    def closed(self, log: ReadLog) -> None:
        """`log`'s generation left the scheduler: its passes are kept like any other."""
        if log in self._live:  # a generation cancelled before its prefill never opened
            self._live.remove(log)
            for entry in log.passes(kept=True):
                self._keep(entry)

    @property
    def cached_tokens(self) -> int:
        return sum(len(entry.token_ids) for entry in self._passes.values())

    @property
    def cached_kv_bytes(self) -> int:
        """Bytes of the storage the kept passes' KV caches hold (each storage counted once)."""
        storages = {
            tensor.untyped_storage().data_ptr(): tensor.untyped_storage().nbytes()
            for entry in self._passes.values() for layer in entry.kv or () for tensor in layer
        }
        return sum(storages.values())

    def features(
        self, messages: list[dict[str, str]], answer: str, *, layers: tuple[int, ...], pooling: str,
        max_answer_tokens: int | None,
    ) -> tuple[list[float], AnswerSpan]:
        """The `layers`' pooled hidden states over the ordinary chat (hidden_states.py),
        concatenated in that order, as plain floats — what `Probe.score` takes — and the span
        it pooled."""
        layers = tuple(layers)
        if pooling == "mean_all_l2" and len(layers) > 1:
            raise ValueError("mean_all_l2 is an embeddings endpoint's vector: one layer only")
        span = answer_span(self._loaded.tokenizer, messages, answer, max_answer_tokens=max_answer_tokens)
        vector = pool(self._states(span.token_ids, layers), span, pooling)
        return [float(value) for value in vector.tolist()], span

    def _states(self, token_ids: tuple[int, ...], layers: tuple[int, ...]) -> Any:
        import torch

        best_key, best, shared = None, None, 0
        for key, entry in self._candidates(layers):
            if (size := _shared_prefix(entry.token_ids, token_ids)) > shared:
                best_key, best, shared = key, entry, size
        if best is not None and shared == len(token_ids):
            if best_key is not None:
                self._passes.move_to_end(best_key)
            return best.states[:shared]
        base = best if best is not None and best.kv is not None else None
        if base is None:
            shared = 0
        with torch.inference_mode():
            states, kv = self._run(token_ids, layers, base, shared)
        if (
            best_key is not None and base is not None and len(token_ids) > len(base.token_ids)
            and len(base.token_ids) - shared <= _CUT_TOKENS
        ):
            del self._passes[best_key]  # the new pass extends it: it holds all the old one did
        self._keep(_Pass(token_ids, layers, states, kv))
        return states

    def _candidates(self, layers: tuple[int, ...]) -> list[tuple[int | None, _Pass]]:
        """Kept passes (by key) and live generations' passes (no key) of these layers."""
        kept = [(key, entry) for key, entry in self._passes.items() if entry.layers == layers]
        live = [(None, entry) for log in self._live if log.layers == layers for entry in log.passes()]
        return kept + live

    def _run(
        self, token_ids: tuple[int, ...], layers: tuple[int, ...], base: _Pass | None, shared: int
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
        new_states = _read(output.hidden_states, layers, 0)
        self.tokens_read += len(token_ids) - shared
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
