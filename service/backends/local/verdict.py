"""The fast verdict: label probabilities from the logits of one forward pass.

The judge prompt opens with a system message that is the same for every request of a framework.
Its KV cache is kept (per adapter state and system text), so each verdict runs only the question
and answer tokens through the model: the cost follows the answer, not the preamble. The reuse is
taken only when the templated system message is an exact token prefix of the templated prompt;
otherwise the verdict falls back to a full forward pass.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.backends.labels import label_for_token
from service.backends.local.adapters import AdapterSlots
from service.backends.local.loader import LoadedModel
from service.backends.local.prompts import chat_text, encode

LabelIds = dict[str, frozenset[int]]


class LabelTokenError(ValueError):
    """The labels cannot be told apart by the first token of the reply."""


def label_token_ids(tokenizer: Any, labels: Sequence[str]) -> LabelIds:
    """The vocabulary's tokens that count for each label, by the rule upstream verdicts use too
    (service.backends.labels): " Un", "eth" or "Ethical" all begin a label.

    Each label's own first token must count for that label alone, or the first token of a reply
    could not tell the labels apart.
    """
    texts = tokenizer.batch_decode([[token] for token in range(len(tokenizer))])
    ids: dict[str, set[int]] = {label: set() for label in labels}
    for token, text in enumerate(texts):
        label = label_for_token(text, labels)
        if label is not None:
            ids[label].add(token)
    for label in labels:
        first = encode(tokenizer, label)[:1]
        if not first or first[0] not in ids[label]:
            piece = texts[first[0]] if first else ""
            raise LabelTokenError(
                f"the judge label {label!r} begins with the token {piece!r} in this model's "
                f"tokenizer, which does not tell it apart from the other labels {list(labels)}; "
                "the fast verdict reads one token, so the labels must begin with distinct tokens"
            )
    return {label: frozenset(tokens) for label, tokens in ids.items()}


@dataclass(frozen=True, slots=True)
class _Prefix:
    token_ids: tuple[int, ...]
    layers: tuple[tuple[Any, Any], ...] | None  # per layer (keys, values); None: cannot be reused


class VerdictRunner:
    """Runs on the model thread only. `max_prefixes=0` turns the prefix reuse off."""

    def __init__(self, loaded: LoadedModel, adapters: AdapterSlots, *, max_prefixes: int = 16) -> None:
        self._model = loaded.model
        self._tokenizer = loaded.tokenizer
        self._adapters = adapters
        self._max_prefixes = max_prefixes
        self._prefixes: OrderedDict[tuple[str | None, str], _Prefix] = OrderedDict()

    @property
    def cached_prefixes(self) -> int:
        return len(self._prefixes)

    def label_probs(
        self, messages: list[dict[str, str]], label_ids: LabelIds, adapter: str | None
    ) -> dict[str, float]:
        import torch

        prompt_ids = encode(self._tokenizer, chat_text(self._tokenizer, messages, generation_prompt=True))
        self._adapters.use(adapter)
        with torch.inference_mode():
            logits = self._next_token_logits(messages, prompt_ids, adapter)
        probs = torch.softmax(logits.float(), dim=-1)
        return {label: float(probs[sorted(ids)].sum()) for label, ids in label_ids.items()}

    def _next_token_logits(
        self, messages: list[dict[str, str]], prompt_ids: list[int], adapter: str | None
    ) -> Any:
        import torch
        from transformers import DynamicCache

        prefix = self._prefix(messages, prompt_ids, adapter)
        if prefix is None or prefix.layers is None:
            ids = torch.tensor([prompt_ids], device=self._model.device)
            return self._model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[0, -1]
        rest = torch.tensor([prompt_ids[len(prefix.token_ids) :]], device=self._model.device)
        # A fresh cache over the stored tensors: the forward pass appends to it, never to them.
        cache = DynamicCache(ddp_cache_data=prefix.layers)
        output = self._model(input_ids=rest, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return output.logits[0, -1]

    def _prefix(
        self, messages: list[dict[str, str]], prompt_ids: list[int], adapter: str | None
    ) -> _Prefix | None:
        if self._max_prefixes == 0 or len(messages) < 2 or messages[0]["role"] != "system":
            return None
        key = (adapter, messages[0]["content"])
        prefix = self._prefixes.get(key)
        if prefix is None:
            prefix = self._compute_prefix(messages[0])
            self._prefixes[key] = prefix
            while len(self._prefixes) > self._max_prefixes:
                self._prefixes.popitem(last=False)
        self._prefixes.move_to_end(key)
        size = len(prefix.token_ids)
        if size >= len(prompt_ids) or tuple(prompt_ids[:size]) != prefix.token_ids:
            return None
        return prefix

    def _compute_prefix(self, system: dict[str, str]) -> _Prefix:
        import torch
        from transformers import DynamicCache

        token_ids = tuple(encode(self._tokenizer, chat_text(self._tokenizer, [system], generation_prompt=False)))
        cache = DynamicCache(config=self._model.config)
        ids = torch.tensor([token_ids], device=self._model.device)
        self._model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        # Sliding-window layers keep only part of the past, so their cache cannot be extended later.
        if any(getattr(layer, "is_sliding", False) for layer in cache.layers):
            return _Prefix(token_ids, None)
        return _Prefix(token_ids, tuple((layer.keys, layer.values) for layer in cache.layers))
