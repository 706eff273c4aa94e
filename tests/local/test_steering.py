"""Repair by steering on the embedded engine (service/backends/local/steering.py): the hook moves a
layer's hidden states along the direction and nowhere else, only during the steered generation's
own forward passes, and the latent verdict still reads the model unsteered."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from service.backends.local.backend import LocalBackend, SteeredLocalBackend
from service.backends.local.hidden_states import answer_span, model_fingerprint, pooled_hidden_states
from service.backends.local.loader import LoadedModel, load_model
from service.backends.local.steering import Steering, decoder_layers
from service.conscience.probe import Probe
from service.conscience.stack import ConscienceKnobs, repair_backend
from service.conscience.steering import SteerableBackend, SteeringSpec
from tests.local.conftest import local_settings

ASK = [{"role": "user", "content": "How do I bake bread?"}]
ANSWER = "Mix flour, water, salt and yeast; knead, let it rise, then bake it."


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(str(tiny_model_dir), cache_dir=tmp_path_factory.mktemp("cache"))


def unit(size: int, seed: int = 0) -> Any:
    import torch

    generator = torch.Generator().manual_seed(seed)
    vector = torch.randn(size, generator=generator)
    return vector / vector.norm()


def layer_one(loaded: LoadedModel, steering: Steering | None = None) -> Any:
    """Hidden state 1 (decoder layer 0's output) at every position of the chat and answer."""
    import contextlib

    import torch

    ids = torch.tensor([answer_span(loaded.tokenizer, ASK, ANSWER).token_ids])
    hooked = steering.hooked() if steering is not None else contextlib.nullcontext()
    with torch.inference_mode(), hooked:
        return loaded.model(input_ids=ids, output_hidden_states=True).hidden_states[1][0].float()


def hook_counts(loaded: LoadedModel) -> list[int]:
    return [len(layer._forward_hooks) for layer in decoder_layers(loaded.model)]


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_the_hook_pulls_states_above_the_offset_back_along_the_direction_only(
    loaded: LoadedModel, alpha: float
) -> None:
    import torch

    plain = layer_one(loaded)
    u = unit(plain.shape[-1])
    along = plain @ u
    offset = float(along.median())  # half the positions lie above it
    before = hook_counts(loaded)
    spec = SteeringSpec((1,), (tuple(u.tolist()),), (offset,), alpha)
    steered = layer_one(loaded, Steering(loaded.model, spec))
    change = steered - plain
    # Along the direction only: what changed has no component orthogonal to it.
    orthogonal = change - (change @ u)[:, None] * u
    assert orthogonal.abs().max() < 1e-4
    # Above the offset a state is pulled back alpha times its excess (1: to the offset, 2:
    # mirrored about it); at or below it, a state is left as it is.
    above = along > offset
    expected = torch.where(above, along - alpha * (along - offset), along)
    assert torch.allclose(steered @ u, expected, atol=1e-4)
    assert torch.equal(steered[~above], plain[~above])
    assert 0 < int(above.sum()) < len(along)
    # The hooks are gone after the pass: the model reads as before.
    assert hook_counts(loaded) == before
    assert torch.equal(layer_one(loaded), plain)


def test_a_spec_that_does_not_fit_the_model_is_refused(loaded: LoadedModel) -> None:
    size = int(loaded.model.config.hidden_size)
    direction = tuple(unit(size).tolist())
    # Hidden state 2 of this 2-layer model is the final norm's output: no decoder layer writes it.
    with pytest.raises(ValueError, match="steering layers must be in 1..1"):
        Steering(loaded.model, SteeringSpec((2,), (direction,), (0.0,), 1.0))
    with pytest.raises(ValueError, match="hidden size"):
        Steering(loaded.model, SteeringSpec((1,), ((0.6, 0.8),), (0.0,), 1.0))


def tiny_probe(fingerprint: str, size: int) -> Probe:
    return Probe(
        model_fingerprint=fingerprint, layers=(1,), pooling="mean_answer",
        weights=tuple(0.5 * ((i % 7) - 3) for i in range(size)), bias=0.1,
        feature_mean=(0.0,) * size, feature_scale=(1.0,) * size, threshold=0.5, target_fpr=0.05,
        data_sha256="d" * 64, model_name="tiny",
    )


@pytest.fixture(scope="module")
def probed(
    tiny_model_dir: Path, loaded: LoadedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalBackend]:
    """A LocalBackend over the tiny model with a latent probe on hidden state 1."""
    path = tmp_path_factory.mktemp("probe") / "tiny.json"
    tiny_probe(model_fingerprint(loaded), int(loaded.model.config.hidden_size)).save(path)
    settings = local_settings(tiny_model_dir, tmp_path_factory.mktemp("cache"), probe_path=path)
    local = LocalBackend.from_settings(settings)
    yield local
    asyncio.run(local.aclose())


def strong(size: int) -> SteeringSpec:
    """Every state pushed far along one direction: a steered generation cannot read as a plain one."""
    return SteeringSpec((1,), (tuple(unit(size, seed=1).tolist()),), (-1000.0,), 0.05)


def greedy(backend: LocalBackend, max_tokens: int = 12) -> dict[str, Any]:
    return {"model": backend.served_base_name, "messages": ASK, "max_tokens": max_tokens, "temperature": 0}


def text(response: dict[str, Any]) -> str:
    return response["choices"][0]["message"]["content"]


async def test_a_steered_generation_is_steered_and_leaves_the_others_and_the_model_as_they_were(
    probed: LocalBackend,
) -> None:
    size = int(probed.engine.loaded.model.config.hidden_size)
    plain = text(await probed.chat(greedy(probed)))
    # transformers' own hooks that record hidden states are installed by the first generation
    # that records them (the latent verdict's): counted after it.
    before = hook_counts(probed.engine.loaded)
    steered_view = probed.steered(strong(size))
    steered = text(await steered_view.chat(greedy(probed)))
    assert steered != plain
    # Interleaved step by step with a steered one, a plain generation reads the model as it is.
    together = await asyncio.gather(steered_view.chat(greedy(probed)), probed.chat(greedy(probed)))
    assert [text(response) for response in together] == [steered, plain]
    # Streamed the same: the hooks are on the generation, not on how it is read.
    streamed = ""
    async for chunk in steered_view.chat_stream(greedy(probed)):
        for choice in chunk["choices"]:
            streamed += choice["delta"].get("content") or ""
    assert streamed == steered
    assert hook_counts(probed.engine.loaded) == before
    assert text(await probed.chat(greedy(probed))) == plain


@pytest.fixture(scope="module")
def scripted(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBackend]:
    """The tiny model trained to answer ASK with ANSWER (greedy): its answer is text that
    tokenises back to the ids generated, so the latent verdict on it can reuse what its
    generation recorded. Its probe reads hidden state 1 along `unit(hidden)`, and scores ANSWER
    0.5 unsteered: a verdict on steered states would score otherwise."""
    from transformers import AutoTokenizer

    from service.backends.local.prompts import chat_text
    from tests.fixtures.tiny_model import QWEN25_TOOLS_TEMPLATE, build_scripted_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = QWEN25_TOOLS_TEMPLATE  # the template the scripted model is saved with
    model_dir = build_scripted_model(
        tiny_model_dir, tmp_path_factory.mktemp("bread-model"),
        prompt_text=chat_text(tokenizer, ASK, generation_prompt=True), answer=ANSWER,
    )
    cache = tmp_path_factory.mktemp("cache")
    loaded = load_model(str(model_dir), cache_dir=cache)
    size = int(loaded.model.config.hidden_size)
    direction = unit(size)
    pooled = pooled_hidden_states(loaded, ASK, ANSWER, layers=[1], poolings=["mean_answer"])["mean_answer"][0]
    probe = replace(
        tiny_probe(model_fingerprint(loaded), size),
        weights=tuple((10.0 * direction).tolist()), bias=-10.0 * float(pooled @ direction),
    )
    path = cache / "probe.json"
    probe.save(path)
    local = LocalBackend.from_settings(local_settings(model_dir, cache, probe_path=path))
    yield local
    asyncio.run(local.aclose())


async def test_the_latent_verdict_on_a_steered_draft_reads_the_model_unsteered(scripted: LocalBackend) -> None:
    """A generation on the base weights records its states for the verdict to reuse; a steered
    one must not, or the judge would read the steered states and pass what it would flag."""
    assert scripted.probe is not None
    loaded = scripted.engine.loaded
    plain_states = layer_one(loaded)
    direction = unit(plain_states.shape[-1])
    # Along the probe's own direction; gentle enough to leave the trained answer as it is.
    spec = SteeringSpec((1,), (tuple(direction.tolist()),), (float((plain_states @ direction).median()),), 0.2)
    answer = text(await scripted.steered(spec).chat(greedy(scripted, 64)))
    assert answer == ANSWER  # the ids it generated are the ids the verdict reads
    assert await scripted.latent_score(ASK, answer) == pytest.approx(0.5, abs=1e-4)


def test_the_repairs_of_the_embedded_engine_draft_steered_when_the_setting_asks(probed: LocalBackend) -> None:
    assert isinstance(probed, SteerableBackend)
    knobs = replace(ConscienceKnobs(), repair_steering_alpha=2.0)
    drafting = repair_backend(probed, knobs)
    assert isinstance(drafting, SteeredLocalBackend) and drafting.backend is probed
    assert repair_backend(probed, replace(knobs, repair_steering_alpha=0.0)) is probed
