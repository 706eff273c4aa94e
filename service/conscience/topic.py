"""The repair's topic check: a draft whose opening is off the request's topic is no repair.

A small model asked to repair a flagged answer sometimes answers something else — another
request's answer, the framework's own example — and a judge passes that readily: it is harmless.
So a draft's opening is compared with the request in the frozen model's own states: the
backend's `/v1/embeddings` of the judge's base model (the embedded engine: its final layer,
mean-pooled, unit length; upstream: `--embeddings-model`, vLLM's mean-pooling embeddings of the
same base model: a generative server embeds nothing), and a cosine below
`--repair-min-topic-similarity` discards the draft with reason `off_topic` (threshold measured:
bench/offtopic.py, bench/results/offtopic.json).

The request's vector is computed once per answer, on the first draft that reaches the check.
A backend that serves no embeddings (an upstream without `--embeddings-model`) skips the check:
never a failure, a debug log and the `skipped` result of `conscience_topic_checks_total`; a
backend that answers the embeddings call with a 4xx is not asked again.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence

from service.conscience import usage
from service.core.backend import JSON, Backend, BackendError, UpstreamRejected

log = logging.getLogger("conscience.topic")

OFF_TOPIC = "off_topic"
ON_TOPIC = "on_topic"
SKIPPED = "skipped"
TEXT_PARTS = ("text", "input_text")  # a chat turn's, a Responses API input's


class TopicEmbedder:
    """The backend's embeddings of texts under its `embeddings_model`: the judge's base model
    (the embedded engine: its served base name; upstream: `--embeddings-model`, None when unset:
    no check). Shared by every answer of one reviewer."""

    def __init__(self, backend: Backend, *, min_similarity: float) -> None:
        """`min_similarity`: the lowest cosine of request and draft opening a repair may have."""
        self._backend = backend
        self.min_similarity = min_similarity
        self._unsupported: str | None = None  # why this backend serves no embeddings, once it said so

    @property
    def model(self) -> str | None:
        return getattr(self._backend, "embeddings_model", None)

    def for_answer(self, conversation: list[JSON], results: dict[str, int] | None = None) -> AnswerTopic:
        """The topic check of one answer to `conversation` (its request read at the first draft),
        counting each draft's result in `results`."""
        return AnswerTopic(self, conversation, results)

    async def embed(self, texts: Sequence[str]) -> list[list[float]] | None:
        """Each text's unit-length vector; None (logged at debug) when the backend cannot give them."""
        model = self.model
        if model is None:
            log.debug("topic check skipped: the backend has no embeddings model (--embeddings-model)")
            return None
        if self._unsupported is not None:
            return None
        try:
            payload = await self._backend.embeddings({"model": model, "input": list(texts), "encoding_format": "float"})
            usage.record("repair", _as_usage(payload.get("usage")))
            vectors = [_unit([float(value) for value in item["embedding"]]) for item in payload["data"]]
        except UpstreamRejected as exc:  # a 4xx: this backend serves no embeddings for the model
            self._unsupported = f"the backend serves no embeddings for {model!r}: {exc}"
            log.debug("topic check skipped: %s", self._unsupported)
            return None
        except (BackendError, KeyError, IndexError, TypeError, ValueError) as exc:
            log.debug("topic check skipped: embeddings of %r failed: %r", model, exc)
            return None
        if len(vectors) != len(texts):
            log.debug("topic check skipped: %d embeddings for %d texts", len(vectors), len(texts))
            return None
        return vectors


class AnswerTopic:
    """One answer's topic check: its request's vector (asked once), each draft opening's cosine
    with it. `results` counts each draft's result (on_topic, off_topic, skipped)."""

    def __init__(
        self, embedder: TopicEmbedder, conversation: list[JSON], results: dict[str, int] | None = None
    ) -> None:
        self._embedder = embedder
        self._conversation = conversation
        self._request_vector: list[float] | None = None
        self._asked = False
        self._lock = asyncio.Lock()
        self.results: dict[str, int] = results if results is not None else {}

    async def discard_reason(self, opening: str) -> str | None:
        """`off_topic` when `opening` is further from the request than the threshold allows;
        None when it is not, or when the check could not run (counted as skipped)."""
        request = await self._request_embedding()
        found = await self._embedder.embed([opening]) if request is not None else None
        if request is None or found is None:
            return self._counted(SKIPPED, None)
        similarity = sum(a * b for a, b in zip(request, found[0], strict=False))
        if similarity < self._embedder.min_similarity:
            log.debug("draft off topic: cosine %.3f < %.3f", similarity, self._embedder.min_similarity)
            return self._counted(OFF_TOPIC, OFF_TOPIC)
        return self._counted(ON_TOPIC, None)

    async def _request_embedding(self) -> list[float] | None:
        async with self._lock:  # raced drafts reach the check together: the request is embedded once
            if not self._asked:
                self._asked = True
                request = request_text(self._conversation)
                if request.strip():
                    vectors = await self._embedder.embed([request])
                    self._request_vector = vectors[0] if vectors else None
                else:
                    log.debug("topic check skipped: the request has no text")
            return self._request_vector

    def _counted(self, result: str, reason: str | None) -> str | None:
        self.results[result] = self.results.get(result, 0) + 1
        return reason


def request_text(conversation: list[JSON]) -> str:
    """What a draft must stay on the topic of: the last user turn's text (its text parts)."""
    for message in reversed(conversation):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            texts = (part for part in content if isinstance(part, dict) and part.get("type") in TEXT_PARTS)
            return "\n".join(part["text"] for part in texts if isinstance(part.get("text"), str))
        return ""
    return ""


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(value * value for value in vector))
    if not vector or norm == 0.0:
        raise ValueError("an empty or zero embedding")
    return [value / norm for value in vector]


def _as_usage(found: object) -> JSON | None:
    """An embeddings call's usage as a repair call's: its prompt tokens."""
    if not isinstance(found, dict) or not isinstance(found.get("prompt_tokens"), int):
        return None
    return {"prompt_tokens": found["prompt_tokens"]}
