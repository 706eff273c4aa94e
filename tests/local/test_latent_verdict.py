"""The embedded engine's latent verdict: the probe loaded at start-up (refused for another
model), scored on the frozen base's pooled hidden state over the ordinary chat."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.backends.local.backend import LocalBackend, probe_for
from service.backends.local.hidden_states import answer_span, model_fingerprint, pooled_hidden_states
from service.backends.local.prompts import plain_messages
from service.conscience import usage
from service.conscience.probe import Probe, ProbeMismatch
from tests.local.conftest import local_settings

ASK = [{"role": "user", "content": "How do I bake bread?"}]
ANSWER = "Mix flour, water, salt and yeast; knead, let it rise, then bake it."


def features(loaded: object, messages: list[dict[str, str]], answer: str, *, layer: int, pooling: str) -> list[float]:
    """The pooled state of one full forward pass: what the engine's reused passes must equal."""
    pooled = pooled_hidden_states(loaded, messages, answer, layers=[layer], poolings=[pooling])
    return pooled[pooling][0].tolist()


def tiny_probe(fingerprint: str, size: int, *, layers: tuple[int, ...] = (1,)) -> Probe:
    return Probe(
        model_fingerprint=fingerprint, layers=layers, pooling="mean_answer",
        weights=tuple(0.01 * ((i % 7) - 3) for i in range(size)), bias=0.1,
        feature_mean=(0.0,) * size, feature_scale=(1.0,) * size, threshold=0.5, target_fpr=0.05,
        data_sha256="d" * 64, model_name="tiny",
    )


def test_a_probe_for_the_model_scores_its_frozen_hidden_states(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = local_settings(tiny_model_dir, tmp_path / "cache")
    plain = LocalBackend.from_settings(settings)
    try:
        assert plain.probe is None  # no shipped probe fits a random tiny model
        loaded = plain.engine.loaded
        size = int(loaded.model.config.hidden_size)
        path = tmp_path / "tiny.json"
        made = tiny_probe(model_fingerprint(loaded), size)
        made.save(path)
        assert probe_for(loaded, path) == made
        expected = made.score(features(loaded, ASK, ANSWER, layer=1, pooling="mean_answer"))
    finally:
        asyncio.run(plain.aclose())
    local = LocalBackend.from_settings(local_settings(tiny_model_dir, tmp_path / "cache", probe_path=path))
    tokens = usage.begin("three_laws")  # the request's tally, as the pipeline opens it
    try:
        score = asyncio.run(local.latent_score(ASK, ANSWER))
    finally:
        asyncio.run(local.aclose())
    assert score == pytest.approx(expected, abs=1e-6)
    # The judge's usage is the tokens of that forward pass (it once read 0 for a latent verdict).
    assert tokens.totals["judge"] == {"prompt_tokens": len(answer_span(
        loaded.tokenizer, plain_messages(ASK), ANSWER, max_answer_tokens=made.max_answer_tokens).token_ids),
        "completion_tokens": 0}


def test_a_probe_over_several_layers_reads_their_states_concatenated(tiny_model_dir: Path, tmp_path: Path) -> None:
    from service.backends.local.loader import load_model

    loaded = load_model(str(tiny_model_dir), cache_dir=tmp_path / "cache")
    size = int(loaded.model.config.hidden_size)
    made = tiny_probe(model_fingerprint(loaded), 2 * size, layers=(2, 1))
    path = tmp_path / "two-layers.json"
    made.save(path)
    both = features(loaded, ASK, ANSWER, layer=2, pooling="mean_answer") + features(
        loaded, ASK, ANSWER, layer=1, pooling="mean_answer"
    )
    local = LocalBackend.from_settings(local_settings(tiny_model_dir, tmp_path / "cache", probe_path=path))
    try:
        score = asyncio.run(local.latent_score(ASK, ANSWER))
    finally:
        asyncio.run(local.aclose())
    assert score == pytest.approx(made.score(both), abs=1e-6)
    assert score != pytest.approx(made.score(both[size:] + both[:size]), abs=1e-6)  # the order counts


def test_a_probe_for_another_model_is_refused_at_start_up(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    tiny_probe("0" * 64, 64).save(path)
    with pytest.raises(ProbeMismatch, match="not the served model"):
        LocalBackend.from_settings(local_settings(tiny_model_dir, tmp_path / "cache", probe_path=path))


def test_the_shipped_final_layer_probe_reads_normalised_mean_pooled_states(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The embeddings-endpoint probe (final layer, mean over all positions, unit length) scores
    the engine's own features the same way, and is never picked as the engine's default."""
    import math

    from service.backends.local.loader import load_model
    from service.conscience.probe import SHIPPED_DIR, load_probe

    shipped = load_probe(SHIPPED_DIR / "embeddings" / "qwen2.5-coder-0.5b-instruct.json")
    assert shipped.pooling == "mean_all_l2" and shipped.layers == (24,)
    assert shipped.figures["cv"]["xstest"]["auc"] >= 0.9 and shipped.figures["cv"]["beavertails"]["auc"] >= 0.8
    assert SHIPPED_DIR / "embeddings" / "qwen2.5-coder-0.5b-instruct.json" not in set(SHIPPED_DIR.glob("*.json"))
    loaded = load_model(str(tiny_model_dir), cache_dir=tmp_path / "cache")
    layer = int(loaded.model.config.num_hidden_layers)
    unit = features(loaded, ASK, ANSWER, layer=layer, pooling="mean_all_l2")
    plain = features(loaded, ASK, ANSWER, layer=layer, pooling="mean_all")
    norm = math.sqrt(sum(v * v for v in plain))
    assert math.isclose(sum(v * v for v in unit), 1.0, rel_tol=1e-5)
    assert unit == pytest.approx([v / norm for v in plain], abs=1e-6)


def test_serve_with_a_probe_for_another_model_fails_in_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The fingerprint is known only once the model has loaded, inside the server's start-up;
    the operator still gets one line naming the problem, not a traceback."""
    import os
    import subprocess
    import sys

    from tests.test_cli import ROOT

    path = tmp_path / "other.json"
    tiny_probe("0" * 64, 64).save(path)
    done = subprocess.run(
        [sys.executable, "-m", "conscience_cli", "serve", "--backend", "local", "--local-model",
         str(tiny_model_dir), "--probe-path", str(path), "--port", "0",
         "--db-url", f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", "--spool-path", str(tmp_path / "spool")],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
        env={**os.environ, "CONSCIENCE_MODEL_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert "error: this probe was fitted for model tiny" in done.stderr
    assert len([line for line in done.stderr.splitlines() if "fitted for" in line]) == 1, done.stderr
