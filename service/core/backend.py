"""The one interface between the conscience pipeline and a model server.

Two implementations: `UpstreamBackend` (any OpenAI-compatible HTTP server: vLLM, llama.cpp)
and `LocalBackend` (transformers + peft in-process). Bodies are OpenAI wire JSON (dicts) so that
every field a client sends reaches the model server untouched; the pipeline never imports httpx
or torch.

Model naming follows vLLM: the policy is addressed by the active adapter's name, the frozen
judge by the base model's name. A backend resolves `body["model"]` accordingly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

JSON = dict[str, Any]


class BackendError(Exception):
    """A failure a client should see in OpenAI's error shape with `status_code`."""

    status_code: int = 502
    error_type: str = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        if error_type is not None:
            self.error_type = error_type
        self.code = code
        self.param = param


class UpstreamUnavailable(BackendError):
    """Connection refused / reset, or the upstream answered 5xx: 502."""

    status_code = 502
    error_type = "upstream_unavailable"


class UpstreamTimeout(BackendError):
    status_code = 504
    error_type = "upstream_timeout"


class UpstreamRejected(BackendError):
    """The upstream answered 4xx: passed through with its status and message."""

    error_type = "invalid_request_error"


class Overloaded(BackendError):
    """429: too busy for now; the answer tells the client when to retry (`Retry-After`)."""

    status_code = 429
    error_type = "rate_limit_error"
    # Queued work clears in seconds, and clients retry anyway: one second is a fair hint.
    retry_after_s = 1


@dataclass(frozen=True, slots=True)
class LabelProbs:
    """Probability of each label as the judge model's next answer.

    `probs` holds raw probabilities (not normalised; the judge normalises) for the labels the
    backend could see. `source` says how they were obtained: `logprobs` (first-token
    distribution) or `text` (the server gave no logprobs; the generated text picked one label).
    """

    probs: dict[str, float]
    source: Literal["logprobs", "text"]
    usage: JSON | None = None  # the call's {prompt_tokens, completion_tokens}, where known


@runtime_checkable
class Backend(Protocol):
    async def chat(self, body: JSON) -> JSON:
        """A non-streaming chat completion (`body["stream"]` is false)."""

    def chat_stream(self, body: JSON) -> AsyncIterator[JSON]:
        """Chat completion chunks, as parsed JSON objects, in upstream order."""

    async def completion(self, body: JSON) -> JSON:
        """A non-streaming legacy text completion."""

    def completion_stream(self, body: JSON) -> AsyncIterator[JSON]:
        """Legacy text completion chunks."""

    async def embeddings(self, body: JSON) -> JSON:
        """Embeddings, passed through unchecked."""

    async def label_probs(
        self, model: str, messages: list[JSON], labels: Sequence[str]
    ) -> LabelProbs:
        """One-token verdict: how likely the model's reply starts with each label."""

    async def models(self) -> list[JSON]:
        """OpenAI `/v1/models` entries (`id`, `object`, `owned_by`, optional `parent`)."""

    async def start(self) -> None:
        """Start background work once the event loop runs (e.g. the adapter watcher)."""

    async def check_ready(self) -> None:
        """Raise BackendError when the model server cannot take requests."""

    async def aclose(self) -> None:
        """Release connections, threads and model memory."""


@runtime_checkable
class SelfNamingBackend(Protocol):
    """A backend that serves its own weights (the local engine), so it knows the names of the
    frozen base and of the active adapter, which changes when a new adapter is hot-loaded."""

    @property
    def served_base_name(self) -> str: ...

    @property
    def active_adapter_name(self) -> str | None: ...

    async def refresh_adapters(self) -> None:
        """Load whatever the adapter registry marks active now, without waiting for a poll."""
