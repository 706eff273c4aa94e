"""The engine's weight formats (service/backends/local/weights.py): int8 and int4 linear layers
multiply by the weights they hold, the served engine keeps the float32-fitted probe, the latent
verdict's reuse of a generation's states and its LoRA adapters. No timing here: bench/engine_speed.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from service.backends.local.backend import LocalBackend
from service.backends.local.engine import Engine
from service.backends.local.hidden_states import model_fingerprint
from service.backends.local.loader import LoadedModel, load_model
from service.backends.local.weights import (
    INT4_GROUP,
    MAX_QUANTISED_ROWS,
    WeightOnlyLinear,
    WeightsError,
    quantise_linears,
)
from service.settings import LocalWeights, Settings
from tests.local.conftest import local_settings
from tests.local.test_latent_runner import (  # noqa: F401  (wordy_model_dir: a pytest fixture)
    ASK,
    encode_answer,
    full_pass,
    generated_text,
    length,
    wordy_model_dir,
)
from tests.local.test_latent_verdict import ANSWER, tiny_probe

QUANTISED = ("int8", "int4")


def random_linear(out_features: int, in_features: int, *, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features, bias=True).to(torch.bfloat16)


@pytest.mark.parametrize("bits", [8, 4])
def test_a_quantised_layer_multiplies_by_its_dequantised_weight(bits: int) -> None:
    dense = random_linear(48, 96)
    layer = WeightOnlyLinear(dense, bits)
    weight = layer.dequantised().float()
    original = dense.weight.float()
    if bits == 8:  # half a step of each row's scale
        bound = original.abs().amax(dim=1, keepdim=True) / 127 / 2
    else:  # half a step of each group of 32 inputs
        groups = original.reshape(48, -1, INT4_GROUP)
        bound = ((groups.amax(-1) - groups.amin(-1)) / 15 / 2).repeat_interleave(INT4_GROUP, dim=1)
    assert ((weight - original).abs() <= bound * 1.02 + 1e-3).all()
    assert (weight - original).abs().max() > 0  # it is quantised, not the dense weight
    inputs = torch.randn(2, MAX_QUANTISED_ROWS // 2, 96, dtype=torch.bfloat16)  # rows as decoding has them
    expected = inputs.float() @ weight.T + dense.bias.float()
    assert torch.allclose(layer(inputs).float(), expected, atol=0.05, rtol=0.02)
    assert layer(inputs).shape == (2, MAX_QUANTISED_ROWS // 2, 48)


def test_weights_on_a_q4k_grid_come_back_as_they_were() -> None:
    """The demo model's weights were de-quantised from Q4_K, whose sub-blocks of 32 are
    `step * code + low` with 4-bit codes: int4 in groups of 32 holds them again (bfloat16 apart)."""
    generator = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 16, (32, 4, INT4_GROUP), generator=generator)
    codes[..., 0], codes[..., 1] = 0, 15  # each sub-block spans its grid, as Q4_K's scales make it
    steps = (torch.rand(32, 4, 1, generator=generator) * 0.01 + 0.001).bfloat16().float()
    lows = (-8 * steps).bfloat16().float()
    dense = random_linear(32, 4 * INT4_GROUP)
    with torch.no_grad():
        dense.weight.copy_((codes * steps + lows).reshape(32, -1))
    back = WeightOnlyLinear(dense, 4).dequantised().float()
    # A few bfloat16 roundings (of the weights, of the product), far under the half step of
    # up to 0.005 that int4 costs weights off the grid (test above).
    assert (back - dense.weight.float()).abs().max() <= 2**-7 * dense.weight.float().abs().max()


@pytest.fixture(scope="module")
def dense_loaded(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(str(tiny_model_dir), cache_dir=tmp_path_factory.mktemp("cache"), dtype="bfloat16")


def test_int4_replaces_the_layers_its_kernel_takes_and_leaves_the_rest_dense(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    loaded = load_model(str(tiny_model_dir), cache_dir=tmp_path, dtype="bfloat16")
    linears = [name for name, module in loaded.model.named_modules() if type(module) is nn.Linear]
    replaced = quantise_linears(loaded.model, LocalWeights.INT4)
    kept = [name for name, module in loaded.model.named_modules() if type(module) is nn.Linear]
    # The tiny vocabulary is no multiple of 16 rows: the output layer stays dense.
    assert loaded.model.config.vocab_size % 16 != 0 and kept == ["lm_head"]
    assert replaced == len(linears) - 1


def test_a_quantised_layer_reads_many_rows_with_its_bfloat16_weight() -> None:
    dense = random_linear(48, 96)
    layer = WeightOnlyLinear(dense, 4)
    few = torch.randn(1, MAX_QUANTISED_ROWS, 96, dtype=torch.bfloat16)
    many = torch.randn(1, MAX_QUANTISED_ROWS + 1, 96, dtype=torch.bfloat16)
    assert torch.equal(layer(many), dense(many))  # a prompt: the bfloat16 product, bit for bit
    assert not torch.equal(layer(few), dense(few))  # decoding: the int4 one
    expected = few.float() @ layer.dequantised().float().T + dense.bias.float()
    assert torch.allclose(layer(few).float(), expected, atol=0.05, rtol=0.02)


def test_quantised_weights_need_the_model_on_the_cpu_in_bfloat16(tiny_model_dir: Path, tmp_path: Path) -> None:
    loaded = load_model(str(tiny_model_dir), cache_dir=tmp_path)  # float32
    with pytest.raises(WeightsError, match="bfloat16"):
        quantise_linears(loaded.model, LocalWeights.INT8)
    assert quantise_linears(loaded.model, LocalWeights.FLOAT32) == 0
    with pytest.raises(ValidationError, match="CPU only"):
        Settings(local_weights="int4", local_device="cuda")
    assert Settings(local_device="cuda").local.weights is LocalWeights.BFLOAT16  # the default, off the CPU
    assert Settings().local.weights is LocalWeights.INT4


@pytest.mark.parametrize("weights", QUANTISED)
def test_a_quantised_engine_serves_and_keeps_the_probe_fitted_on_float32(
    weights: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    float32 = load_model(str(tiny_model_dir), cache_dir=tmp_path / "cache")
    made = tiny_probe(model_fingerprint(float32), int(float32.model.config.hidden_size))
    path = tmp_path / "tiny.json"
    made.save(path)
    dense = LocalBackend.from_settings(local_settings(tiny_model_dir, tmp_path / "cache", probe_path=path))
    try:
        dense_score = asyncio.run(dense.latent_score(ASK, ANSWER))
    finally:
        asyncio.run(dense.aclose())
    local = LocalBackend.from_settings(
        local_settings(tiny_model_dir, tmp_path / "cache", local_weights=weights, probe_path=path)
    )
    try:
        assert local.probe == made
        assert model_fingerprint(local.engine.loaded) == made.model_fingerprint  # it keeps the bfloat16 weights
        assert any(isinstance(module, WeightOnlyLinear) for module in local.engine.loaded.model.modules())
        response = asyncio.run(local.chat({"messages": ASK, "max_tokens": 8, "temperature": 0}))
        assert response["usage"]["completion_tokens"] == 8
        score = asyncio.run(local.latent_score(ASK, ANSWER))
    finally:
        asyncio.run(local.aclose())
    assert score == pytest.approx(dense_score, abs=0.05)  # near, not equal: bfloat16 and 4 or 8 bits


@pytest.mark.parametrize("weights", QUANTISED)
async def test_the_latent_verdict_reuses_a_quantised_generations_states(
    weights: str, wordy_model_dir: Path, tmp_path: Path  # noqa: F811  (the imported fixture)
) -> None:
    loaded = load_model(str(wordy_model_dir), cache_dir=tmp_path, dtype="bfloat16")
    quantise_linears(loaded.model, LocalWeights(weights))
    engine = Engine(loaded, max_queued=4, max_concurrent=2, latent_layers=(1,))
    try:
        answer = await generated_text(engine, loaded, 24)
        assert len(encode_answer(loaded, answer)) == 24
        features, covered = await engine.latent_features(
            ASK, answer, layers=(1,), pooling="mean_answer", max_answer_tokens=None
        )
        assert covered == length(loaded, answer)
        assert engine.latent_tokens_read == 1  # only the last sampled token: the rest was the generation's
        # bfloat16 states, one token at a time or all at once: equal to a few units of its last place.
        assert features == pytest.approx(full_pass(loaded, answer, 1, "mean_answer"), abs=0.05, rel=0.02)
    finally:
        await engine.close()


async def test_an_adapter_loads_over_int8_layers_and_steers_only_the_policy(
    tiny_model_dir: Path, lora_adapters: list[Path], tmp_path: Path
) -> None:
    loaded = load_model(str(tiny_model_dir), cache_dir=tmp_path, dtype="bfloat16")
    quantise_linears(loaded.model, LocalWeights.INT8)
    engine = Engine(loaded, max_queued=4, max_concurrent=2)
    try:
        base = await generated_text(engine, loaded, 12)
        await engine.activate_adapter("conscience-v1", str(lora_adapters[0]))
        steered = await generated_text(engine, loaded, 12)
        assert steered != base
        assert await generated_text(engine, loaded, 12, model=engine.served_base_name) == base
    finally:
        await engine.close()
