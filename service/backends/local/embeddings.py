"""The embedded engine's `/v1/embeddings`: the frozen model's own states of a text.

Each input is tokenised as it is (no chat template, no special tokens: what vLLM embeds for a
plain `input`), run through the base weights (adapters off) in one forward pass of its own — no
padding, so an input's vector never depends on the others in its request — and its positions'
hidden states of the final layer (after the model's final norm) are averaged and scaled to unit
length. That is what vLLM's embeddings endpoint with mean pooling returns for the same model
(`--runner pooling --convert embed --pooler-config '{"pooling_type": "MEAN"}'`), so the
repair's topic check (service/conscience/topic.py) reads the same vectors on both backends and
one threshold serves both. Measured against a middle layer on the demo model: bench/offtopic.py.
"""

from __future__ import annotations

import base64
from typing import Any

from service.backends.local.loader import LoadedModel
from service.backends.local.prompts import encode, invalid
from service.core.backend import JSON

ENCODINGS = ("float", "base64")


def embedding_inputs(tokenizer: Any, body: JSON) -> list[list[int]]:
    """One token list per input: `input` is a string, strings, token ids, or lists of ids, as
    OpenAI takes it; an empty input is the client's error (400, param `input`)."""
    given = body.get("input")
    if isinstance(given, str):
        given = [given]
    if isinstance(given, list) and given:
        if all(isinstance(item, str) for item in given):
            ids = [encode(tokenizer, item) for item in given]
        elif all(isinstance(item, int) for item in given):
            ids = [_checked_ids(tokenizer, given)]
        elif all(isinstance(item, list) for item in given):
            ids = [_checked_ids(tokenizer, item) for item in given]
        else:
            ids = []
        if ids and all(ids):
            return ids
        if ids:
            raise invalid("each input must hold at least one token", "input")
    raise invalid("input must be a non-empty string, a list of strings or a list of token ids", "input")


def _checked_ids(tokenizer: Any, ids: list[Any]) -> list[int]:
    vocab = len(tokenizer)
    if not all(isinstance(token, int) and not isinstance(token, bool) and 0 <= token < vocab for token in ids):
        raise invalid(f"token ids must be integers in [0, {vocab})", "input")
    return list(ids)


def encoding_of(body: JSON) -> str:
    """`encoding_format` (OpenAI's SDK sends `base64` unless told otherwise); `dimensions`,
    which only a model trained for shortened vectors honours, is refused."""
    if body.get("dimensions") is not None:
        raise invalid("`dimensions` is not supported by the local backend", "dimensions")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ENCODINGS:
        raise invalid(f"encoding_format must be one of {', '.join(ENCODINGS)}", "encoding_format")
    return str(encoding)


def mean_pooled(loaded: LoadedModel, token_ids: list[int], layer: int) -> list[float]:
    """The unit-length mean of `layer`'s hidden states over `token_ids` (one pass, no grad;
    layers numbered as transformers' `hidden_states`). Runs on the model thread."""
    import torch

    ids = torch.tensor([token_ids], device=loaded.model.device)
    with torch.inference_mode():
        # logits_to_keep=1: the vocabulary projection of one position only, not of every token.
        output = loaded.model(input_ids=ids, use_cache=False, output_hidden_states=True, logits_to_keep=1)
    vector = output.hidden_states[layer][0].float().mean(dim=0)
    vector = vector / vector.norm().clamp_min(1e-12)
    return [float(value) for value in vector.tolist()]


def embedding_response(model: str, vectors: list[list[float]], tokens: int, encoding: str) -> JSON:
    """OpenAI's embeddings response: `base64` is the little-endian float32 bytes, as OpenAI sends them."""
    data = [
        {"object": "embedding", "index": index, "embedding": _encoded(vector, encoding)}
        for index, vector in enumerate(vectors)
    ]
    return {
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    import numpy as np

    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
