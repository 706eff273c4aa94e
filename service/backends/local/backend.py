"""`LocalBackend`: the `Backend` interface over the embedded engine, speaking OpenAI JSON."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from service.backends.local.adapter_watcher import AdapterWatcher, HasSessions
from service.backends.local.chat_stream import ChatChoiceStream, final_message
from service.backends.local.embeddings import embedding_inputs, embedding_response, encoding_of
from service.backends.local.engine import Engine, ModelNotFound
from service.backends.local.generation import Usage
from service.backends.local.hidden_states import num_layers
from service.backends.local.loader import LoadedModel, load_model
from service.backends.local.openai_shapes import (
    Envelope,
    assistant_message,
    chat_completion,
    chunk,
    text_completion,
    usage_chunk,
    usage_json,
)
from service.backends.local.prompts import (
    chat_prompt_ids,
    completion_prompts,
    context_room,
    invalid,
    plain_messages,
)
from service.backends.local.sampling import SamplingParams, sampling_params
from service.backends.local.steering import Steering
from service.backends.local.tools import ToolUse, tool_use
from service.conscience.probe import SHIPPED_DIR, Probe, ProbeError, load_probe
from service.conscience.steering import SteeringSpec
from service.conscience.usage import record as record_usage
from service.core.backend import JSON, BackendError, LabelProbs
from service.settings import Settings

# Request fields this engine cannot honour; sending them gets a clear 400, not a silent ignore.
_CHAT_UNSUPPORTED = ("functions", "logprobs", "top_logprobs")
_COMPLETION_UNSUPPORTED = ("echo", "suffix", "logprobs")


def _reject_unsupported(body: JSON, fields: Sequence[str]) -> None:
    for name in fields:
        if body.get(name):
            raise invalid(f"`{name}` is not supported by the local backend", name)
    best_of = body.get("best_of")
    if isinstance(best_of, int) and best_of > 1:
        raise invalid("`best_of` is not supported by the local backend; use `n`", "best_of")


def probe_for(loaded: LoadedModel, probe_path: Path | None) -> Probe | None:
    """The probe named by `probe_path` — refused (ProbeMismatch) when it was fitted for another
    model — or, unnamed, the shipped probe whose fingerprint matches the model (None: none)."""
    from service.backends.local.hidden_states import model_fingerprint

    fingerprint = model_fingerprint(loaded)
    if probe_path is not None:
        return load_probe(probe_path, model_fingerprint=fingerprint)
    for path in sorted(SHIPPED_DIR.glob("*.json")):
        try:
            probe = load_probe(path)
        except ProbeError:
            continue
        if probe.model_fingerprint == fingerprint:
            return probe
    return None


class StoppableStream:
    """A streamed generation whose reader may stop one choice and read on (`stop_choice`): the
    embedded engine ends that choice at its next step, as a repair's raced drafts need
    (service/conscience/choice_streams.py)."""

    def __init__(self, start: Callable[[set[int]], AsyncIterator[JSON]]) -> None:
        self._stopped: set[int] = set()
        self._chunks = start(self._stopped)

    def __aiter__(self) -> StoppableStream:
        return self

    async def __anext__(self) -> JSON:
        return await anext(self._chunks)

    def stop_choice(self, index: int) -> None:
        self._stopped.add(index)

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class LocalBackend:
    def __init__(
        self, engine: Engine, *, default_max_tokens: int, registry: HasSessions | None = None,
        adapter_poll_s: float = 5.0, probe: Probe | None = None,
    ) -> None:
        self.engine = engine
        self.probe = probe  # the latent verdict's probe; None: no latent verdict
        self._default_max_tokens = default_max_tokens
        self._watcher = (
            AdapterWatcher(engine, registry, poll_s=adapter_poll_s) if registry is not None else None
        )

    @classmethod
    def from_settings(cls, settings: Settings, db: HasSessions | None = None) -> LocalBackend:
        """Load the model (the demo model when `local_model` is unset); blocking, seconds.

        Fails with a clear message when the model cannot be loaded or cannot tell the judge's
        labels apart. `await start()` then loads the registry's active adapter and follows it.
        """
        import torch

        from service.backends.local.demo import ensure_demo_model
        from service.backends.local.weights import compute_dtype, quantise_linears
        from service.conscience.judge import LABELS

        if settings.local.threads is not None:
            torch.set_num_threads(settings.local.threads)
        loaded = load_model(
            settings.local.model or str(ensure_demo_model(settings)),
            cache_dir=settings.local.model_cache_dir,
            device=settings.local.device,
            dtype=compute_dtype(settings.local.weights),
        )
        # int8/int4 layers keep their bfloat16 weights: the fingerprint (and so the probe) is the model's.
        quantise_linears(loaded.model, settings.local.weights)
        probe = probe_for(loaded, settings.judge.probe_path)
        engine = Engine(
            loaded,
            max_queued=settings.local.max_queue,
            max_concurrent=settings.local.max_concurrent,
            labels=LABELS,
            latent_layers=None if probe is None else probe.layers,
        )
        return cls(
            engine,
            default_max_tokens=settings.local.default_max_tokens,
            registry=db,
            adapter_poll_s=settings.adapters.poll_s,
            probe=probe,
        )

    async def start(self) -> None:
        if self._watcher is not None:
            await self._watcher.refresh()
            self._watcher.start()

    @property
    def served_base_name(self) -> str:
        return self.engine.served_base_name

    @property
    def active_adapter_name(self) -> str | None:
        return self.engine.active_adapter_name

    async def refresh_adapters(self) -> None:
        """Load the registry's active adapter now instead of at the next poll."""
        if self._watcher is None:
            raise RuntimeError("this LocalBackend was built without an adapter registry")
        await self._watcher.refresh()

    # --- generation ---------------------------------------------------------------------------

    def _params(self, body: JSON, prompts: list[list[int]], param: str) -> SamplingParams:
        room = min(context_room(len(ids), self.engine.context_len, param) for ids in prompts)
        return sampling_params(body, default_max_tokens=self._default_max_tokens, room=room)

    def _model(self, body: JSON) -> str | None:
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise invalid("model must be a string", "model")
        return model

    def _envelope(self, model: str | None, *, chat: bool) -> Envelope:
        label = model or self.engine.active_adapter_name or self.engine.served_base_name
        return Envelope.new(label, chat=chat)

    async def _prepare(
        self, body: JSON, *, chat: bool
    ) -> tuple[str | None, list[list[int]], SamplingParams, ToolUse | None]:
        model = self._model(body)
        _reject_unsupported(body, _CHAT_UNSUPPORTED if chat else _COMPLETION_UNSUPPORTED)
        tokenizer = self.engine.loaded.tokenizer
        tools = tool_use(body) if chat else None
        if chat:
            prompt = await asyncio.to_thread(
                chat_prompt_ids, tokenizer, body, tools=tools and tools.tools,
                answer_start=tools.forced_start if tools else "",
            )
            prompts = [prompt]
        else:
            prompts = await asyncio.to_thread(completion_prompts, tokenizer, body)
        return model, prompts, self._params(body, prompts, "messages" if chat else "prompt"), tools

    async def _complete(
        self, body: JSON, *, chat: bool, shape: Callable[..., JSON], steering: Steering | None = None
    ) -> JSON:
        model, prompts, params, tools = await self._prepare(body, chat=chat)
        count = len(prompts) * params.n
        texts, reasons = [""] * count, ["stop"] * count
        usage = Usage(0, 0)
        generation = self.engine.generate(model, prompts, params, steering=steering)
        async with contextlib.aclosing(generation) as events:
            async for event in events:
                if isinstance(event, Usage):
                    usage = event
                    continue
                for delta in event:
                    texts[delta.index] += delta.text
                    if delta.finish_reason:
                        reasons[delta.index] = delta.finish_reason
        envelope = self._envelope(model, chat=chat)
        if not chat:
            return shape(envelope, texts, reasons, usage)
        messages = []
        for index, text in enumerate(texts):
            content, calls, reasons[index] = final_message(text, reasons[index], tools)
            messages.append(assistant_message(content, calls))
        return chat_completion(envelope, texts, reasons, usage, messages)

    async def _stream(
        self, body: JSON, *, chat: bool, stopped: set[int], steering: Steering | None = None
    ) -> AsyncIterator[JSON]:
        """`stream_options.include_usage`: a usage chunk at the end; with `continuous_usage_stats`
        as well (vLLM's option), every chunk also carries the usage so far, so a reader that stops
        the stream early still knows what it cost. `stopped`: see `StoppableStream`."""
        model, prompts, params, tools = await self._prepare(body, chat=chat)
        envelope = self._envelope(model, chat=chat)
        options = body.get("stream_options")
        with_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        continuous = with_usage and bool(options.get("continuous_usage_stats"))
        prompt_tokens = sum(len(prompt) for prompt in prompts)
        tokens: dict[int, int] = {}
        choices: dict[int, ChatChoiceStream] = {}
        generation = self.engine.generate(model, prompts, params, stopped, steering=steering)
        async with contextlib.aclosing(generation) as events:
            async for event in events:
                if isinstance(event, Usage):
                    if with_usage:
                        yield usage_chunk(envelope, event)
                    continue
                for delta in event:
                    tokens[delta.index] = delta.tokens
                    so_far = usage_json(Usage(prompt_tokens, sum(tokens.values()))) if continuous else None
                    if chat:
                        choice = choices.get(delta.index) or choices.setdefault(
                            delta.index, ChatChoiceStream(envelope, delta.index, tools=tools, with_usage=with_usage))
                        updates = choice.updates(delta)
                    else:
                        updates = [chunk(envelope, delta.index, text=delta.text,
                                         finish_reason=delta.finish_reason, with_usage=with_usage)]
                    for update in updates:
                        yield update if so_far is None else {**update, "usage": so_far}

    async def chat(self, body: JSON, *, steering: Steering | None = None) -> JSON:
        return await self._complete(body, chat=True, shape=chat_completion, steering=steering)

    def chat_stream(self, body: JSON, *, steering: Steering | None = None) -> StoppableStream:
        return StoppableStream(lambda stopped: self._stream(body, chat=True, stopped=stopped, steering=steering))

    async def completion(self, body: JSON, *, steering: Steering | None = None) -> JSON:
        return await self._complete(body, chat=False, shape=text_completion, steering=steering)

    def completion_stream(self, body: JSON, *, steering: Steering | None = None) -> StoppableStream:
        return StoppableStream(lambda stopped: self._stream(body, chat=False, stopped=stopped, steering=steering))

    def steered(self, steering: SteeringSpec) -> SteeredLocalBackend:
        """A view of this backend whose generations are steered by `steering` (ValueError now
        when it does not fit the model); see service/conscience/steering.py."""
        return SteeredLocalBackend(self, Steering(self.engine.loaded.model, steering))

    @property
    def embeddings_model(self) -> str:
        """The name /v1/embeddings serves (the repair's topic check asks it): the base model."""
        return self.engine.served_base_name

    async def embeddings(self, body: JSON) -> JSON:
        """The frozen base model's own states of each input: its final layer's hidden states,
        mean-pooled and scaled to unit length (service/backends/local/embeddings.py). Only the
        base model's served name embeds: an adapter's states are not the frozen model's."""
        base = self.engine.served_base_name
        if body.get("model") != base:
            raise ModelNotFound(
                f"The model `{body.get('model')}` does not serve embeddings; `{base}` does.",
                code="model_not_found", param="model",
            )
        encoding = encoding_of(body)
        inputs = await asyncio.to_thread(embedding_inputs, self.engine.loaded.tokenizer, body)
        for ids in inputs:
            if len(ids) > self.engine.context_len:
                raise invalid(
                    f"an input has {len(ids)} tokens; the model's context holds {self.engine.context_len}", "input"
                )
        vectors = await self.engine.embeddings(inputs, layer=num_layers(self.engine.loaded))
        tokens = sum(len(ids) for ids in inputs)
        return embedding_response(base, vectors, tokens, encoding)

    # --- judge, models, lifecycle ------------------------------------------------------------

    async def label_probs(
        self, model: str, messages: list[JSON], labels: Sequence[str]
    ) -> LabelProbs:
        probs = await self.engine.label_probs(model, plain_messages(messages), labels)
        prompt = await asyncio.to_thread(chat_prompt_ids, self.engine.loaded.tokenizer, {"messages": messages})
        return LabelProbs(
            probs=probs, source="logprobs", usage={"prompt_tokens": len(prompt), "completion_tokens": 1}
        )

    async def latent_score(self, messages: list[JSON], answer: str) -> float:
        """The probe's P(unethical) for `answer` to `messages`, read from the frozen base."""
        if self.probe is None:
            raise BackendError(
                "the local model has no latent probe (set CONSCIENCE_JUDGE__PROBE_PATH)",
                status_code=500, error_type="server_error",
            )
        probe = self.probe
        feats, tokens = await self.engine.latent_features(
            plain_messages(messages), answer, layers=probe.layers, pooling=probe.pooling,
            max_answer_tokens=probe.max_answer_tokens,
        )
        record_usage("judge", {"prompt_tokens": tokens, "completion_tokens": 0})
        return probe.score(feats)

    async def models(self) -> list[JSON]:
        base = self.engine.served_base_name
        # max_model_len as vLLM lists it: the proxy bounds max_tokens by it (ModelCatalog).
        common = {"object": "model", "owned_by": "conscience", "max_model_len": self.engine.context_len}
        entries: list[JSON] = [{"id": base, **common, "root": base, "parent": None}]
        adapter = self.engine.active_adapter_name
        if adapter is not None:
            entries.append({"id": adapter, **common, "root": adapter, "parent": base})
        return entries

    async def check_ready(self) -> None:
        if not self.engine.ready:
            raise BackendError(
                "the local model is not running", status_code=503, error_type="service_unavailable"
            )

    async def aclose(self) -> None:
        if self._watcher is not None:
            await self._watcher.stop()
        await self.engine.close()



class SteeredLocalBackend:
    """A `LocalBackend` whose generations (chat and completions, streamed or not) are all steered;
    everything else — judging, models, readiness — is the backend's own, unsteered. A view: it
    starts and closes nothing."""

    def __init__(self, backend: LocalBackend, steering: Steering) -> None:
        self.backend = backend
        self._steering = steering

    async def chat(self, body: JSON) -> JSON:
        return await self.backend.chat(body, steering=self._steering)

    def chat_stream(self, body: JSON) -> StoppableStream:
        return self.backend.chat_stream(body, steering=self._steering)

    async def completion(self, body: JSON) -> JSON:
        return await self.backend.completion(body, steering=self._steering)

    def completion_stream(self, body: JSON) -> StoppableStream:
        return self.backend.completion_stream(body, steering=self._steering)

    async def embeddings(self, body: JSON) -> JSON:
        return await self.backend.embeddings(body)

    async def label_probs(self, model: str, messages: list[JSON], labels: Sequence[str]) -> LabelProbs:
        return await self.backend.label_probs(model, messages, labels)

    async def models(self) -> list[JSON]:
        return await self.backend.models()

    async def start(self) -> None:
        return None

    async def check_ready(self) -> None:
        await self.backend.check_ready()

    async def aclose(self) -> None:
        return None
