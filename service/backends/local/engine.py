"""The embedded engine: one loaded model, its adapters, its worker, asked from the event loop.

Model names follow vLLM: the base model's served name means adapters disabled (the frozen
judge and repairer); the active adapter's name means the policy. A request without a model goes
to the policy. Any other name is a 404, as vLLM answers for an unloaded adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection, Sequence

from service.backends.local.adapters import AdapterSlots
from service.backends.local.embeddings import mean_pooled
from service.backends.local.generation import (
    ChoiceDelta,
    EventChannel,
    GenerationJob,
    Usage,
    stop_token_ids,
)
from service.backends.local.latent import LatentRunner
from service.backends.local.loader import LoadedModel
from service.backends.local.sampling import SamplingParams
from service.backends.local.scheduler import Scheduler
from service.backends.local.steering import Steering
from service.backends.local.verdict import LabelIds, LabelTokenError, VerdictRunner, label_token_ids
from service.core.backend import BackendError


class ModelNotFound(BackendError):
    status_code = 404
    error_type = "not_found_error"


def _as_backend_error(error: BaseException) -> BackendError:
    if isinstance(error, BackendError):
        return error
    return BackendError(
        f"the local model failed: {error}", status_code=500, error_type="server_error"
    )


class Engine:
    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_queued: int,
        max_concurrent: int,
        labels: Sequence[str] = (),
        max_prefixes: int = 16,
        latent_layers: tuple[int, ...] | None = None,
    ) -> None:
        """`labels`: the judge's verdict labels, checked now (LabelTokenError) rather than later.
        `latent_layers`: the latent probe's layers; generations on the base weights record them, so
        that the verdict on their answers reads almost nothing again (service/backends/local/latent.py)."""
        self.loaded = loaded
        self.adapters = AdapterSlots(loaded.model)
        self.context_len = int(loaded.model.config.max_position_embeddings)
        self._verdicts = VerdictRunner(loaded, self.adapters, max_prefixes=max_prefixes)
        self._latent = LatentRunner(loaded)
        self._latent_layers = latent_layers
        self._stop_ids = stop_token_ids(loaded)
        self._labels: dict[tuple[str, ...], LabelIds] = {}
        if labels:
            self.check_labels(labels)
        self._scheduler = Scheduler(max_queued=max_queued, max_concurrent=max_concurrent)

    @property
    def served_base_name(self) -> str:
        return self.loaded.served_name

    @property
    def active_adapter_name(self) -> str | None:
        return self.adapters.active_name

    @property
    def latent_tokens_read(self) -> int:
        """Positions the latent verdict has run through the model itself (generations' not counted)."""
        return self._latent.tokens_read

    @property
    def latent_cache(self) -> LatentRunner:
        """The latent verdict's kept passes (their token and byte counts: tests, bench)."""
        return self._latent

    @property
    def ready(self) -> bool:
        return self._scheduler.alive

    def check_labels(self, labels: Sequence[str]) -> LabelIds:
        """Token ids of each label; raises LabelTokenError when the labels are ambiguous."""
        key = tuple(labels)
        if key not in self._labels:
            self._labels[key] = label_token_ids(self.loaded.tokenizer, labels)
        return self._labels[key]

    def _lease(self, model: str | None) -> tuple[str | None, Callable[[], None]]:
        """The adapter a model name means (None: base weights) and how to give it back."""
        if model == self.served_base_name:
            return None, lambda: None
        name = model if model is not None else self.adapters.active_name
        if name is None:
            return None, lambda: None
        if not self.adapters.lease(name):
            raise ModelNotFound(
                f"The model `{model}` does not exist.", code="model_not_found", param="model"
            )
        return name, lambda: self.adapters.release(name)

    async def generate(
        self, model: str | None, prompts: list[list[int]], params: SamplingParams,
        stopped: Collection[int] = frozenset(), steering: Steering | None = None,
    ) -> AsyncIterator[list[ChoiceDelta] | Usage]:
        """Deltas of every choice (prompt i's choices are numbered from i * n), then total usage;
        a choice whose index is added to `stopped` meanwhile ends without a further delta.
        `steering`: every forward pass of these generations is steered (a repair's drafts); they
        record nothing for the latent verdict, which reads the model unsteered."""
        channel = EventChannel()
        jobs: list[GenerationJob] = []
        try:
            for number, prompt_ids in enumerate(prompts):
                adapter, release = self._lease(model)
                # Created on this thread but only filled and read on the model thread.
                reads = (
                    self._latent.track(self._latent_layers)
                    if adapter is None and self._latent_layers is not None and steering is None else None
                )
                job = GenerationJob(
                    loaded=self.loaded,
                    adapters=self.adapters,
                    adapter=adapter,
                    stop_ids=self._stop_ids,
                    prompt_ids=prompt_ids,
                    params=params,
                    first_index=number * params.n,
                    channel=channel,
                    on_release=release,
                    reads=reads,
                    stopped=stopped,
                    steering=steering,
                )
                try:
                    self._scheduler.submit(job)
                except BaseException:
                    release()
                    raise
                jobs.append(job)
            prompt_tokens = completion_tokens = 0
            for _ in jobs:
                while not isinstance(event := await channel.receive(), Usage):
                    if isinstance(event, BaseException):
                        raise _as_backend_error(event)
                    yield event
                prompt_tokens += event.prompt_tokens
                completion_tokens += event.completion_tokens
            yield Usage(prompt_tokens, completion_tokens)
        finally:
            for job in jobs:  # a client that left, or a sibling that failed: stop the rest
                job.cancelled = True

    async def label_probs(
        self, model: str | None, messages: list[dict[str, str]], labels: Sequence[str]
    ) -> dict[str, float]:
        try:
            label_ids = self.check_labels(labels)
        except LabelTokenError as exc:
            raise BackendError(str(exc), status_code=500, error_type="server_error") from exc
        adapter, release = self._lease(model)
        try:
            return await self._scheduler.call(
                lambda: self._verdicts.label_probs(messages, label_ids, adapter)
            )
        except Exception as exc:
            raise _as_backend_error(exc) from exc
        finally:
            release()

    async def latent_features(
        self, messages: list[dict[str, str]], answer: str, *, layers: tuple[int, ...], pooling: str,
        max_answer_tokens: int | None,
    ) -> tuple[list[float], int]:
        """The frozen base's (adapters off) pooled hidden states of `layers` over the ordinary chat — the
        conversation, then `answer` as the assistant turn — on the model thread, and the number
        of tokens that pass covers (the judge's usage; service/backends/local/latent.py reads
        only those it has not read before)."""

        def run() -> tuple[list[float], int]:
            self.adapters.use(None)
            values, span = self._latent.features(
                messages, answer, layers=layers, pooling=pooling, max_answer_tokens=max_answer_tokens
            )
            return values, len(span.token_ids)

        try:
            return await self._scheduler.call(run)
        except Exception as exc:
            raise _as_backend_error(exc) from exc

    async def embeddings(self, inputs: list[list[int]], *, layer: int) -> list[list[float]]:
        """Each token list's unit-length mean of `layer`'s hidden states, read from the frozen
        base (adapters off) on the model thread, one pass per input
        (service/backends/local/embeddings.py)."""

        def run() -> list[list[float]]:
            self.adapters.use(None)
            return [mean_pooled(self.loaded, ids, layer) for ids in inputs]

        try:
            return await self._scheduler.call(run)
        except Exception as exc:
            raise _as_backend_error(exc) from exc

    async def activate_adapter(self, name: str, path: str) -> None:
        await self._scheduler.call(lambda: self.adapters.activate(name, path))

    async def deactivate_adapter(self) -> None:
        await self._scheduler.call(self.adapters.deactivate)

    async def close(self) -> None:
        await asyncio.to_thread(self._scheduler.close)
