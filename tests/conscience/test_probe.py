"""The latent probe artefact: a small JSON file, scored in pure Python, refused for another model."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from service.conscience.probe import (
    FORMAT,
    Probe,
    ProbeError,
    ProbeMismatch,
    fingerprint,
    load_probe,
    shipped_probe_path,
)

CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 8,
    "num_hidden_layers": 2,
    "vocab_size": 100,
    "torch_dtype": "float32",
}


def make_probe(size: int = 8, seed: int = 0, **overrides: object) -> Probe:
    rng = random.Random(seed)
    fields: dict[str, object] = {
        "model_fingerprint": fingerprint(CONFIG, {"model.norm.weight": "ab" * 32}),
        "layers": (1,),
        "pooling": "mean_answer",
        "weights": tuple(rng.gauss(0, 1) for _ in range(size)),
        "bias": -0.3,
        "feature_mean": tuple(rng.gauss(0, 1) for _ in range(size)),
        "feature_scale": tuple(rng.uniform(0.5, 2.0) for _ in range(size)),
        "threshold": 0.42,
        "target_fpr": 0.05,
        "data_sha256": "0" * 64,
        "model_name": "tiny",
        "figures": {"cv": {"auc": 0.9}},
    }
    fields.update(overrides)
    return Probe(**fields)  # type: ignore[arg-type]


def test_round_trip(tmp_path: Path) -> None:
    probe = make_probe()
    path = tmp_path / "probe.json"
    probe.save(path)
    assert json.loads(path.read_text())["format"] == FORMAT
    again = load_probe(path, model_fingerprint=probe.model_fingerprint)
    assert again == probe
    features = [0.1 * i for i in range(probe.size)]
    assert again.score(features) == probe.score(features)


def test_a_probe_for_another_model_is_refused(tmp_path: Path) -> None:
    probe = make_probe()
    path = tmp_path / "probe.json"
    probe.save(path)
    other = fingerprint(CONFIG, {"model.norm.weight": "cd" * 32})
    with pytest.raises(ProbeMismatch, match="calibrate --probe"):
        load_probe(path, model_fingerprint=other)
    with pytest.raises(ProbeMismatch):
        probe.check_model(fingerprint({**CONFIG, "num_hidden_layers": 3}, {"model.norm.weight": "ab" * 32}))
    probe.check_model(probe.model_fingerprint)


def test_fingerprint_reads_identity_fields_only() -> None:
    digests = {"a": "1" * 64, "b": "2" * 64}
    base = fingerprint(CONFIG, digests)
    assert fingerprint({**CONFIG, "torch_dtype": "bfloat16"}, dict(reversed(digests.items()))) == base
    for field, value in [("hidden_size", 16), ("vocab_size", 101), ("model_type", "llama")]:
        assert fingerprint({**CONFIG, field: value}, digests) != base
    assert fingerprint(CONFIG, {**digests, "b": "3" * 64}) != base
    with pytest.raises(ProbeError):
        fingerprint({"model_type": "qwen2"}, digests)


def test_scores_match_a_numpy_reference() -> None:
    np = pytest.importorskip("numpy")
    probe = make_probe(size=64, seed=3)
    rng = np.random.default_rng(1)
    w, mu, sd = (np.array(v) for v in (probe.weights, probe.feature_mean, probe.feature_scale))
    for x in rng.normal(0, 2, size=(20, 64)):
        expected = 1 / (1 + np.exp(-(((x - mu) / sd) @ w + probe.bias)))
        assert probe.score(x.tolist()) == pytest.approx(float(expected), rel=1e-12, abs=1e-15)
    assert probe.flagged([float(v) for v in mu]) is (probe.score(list(mu)) >= probe.threshold)


def test_extreme_logits_stay_probabilities() -> None:
    probe = make_probe(size=1, weights=(1.0,), feature_mean=(0.0,), feature_scale=(1.0,), bias=0.0)
    assert probe.score([1000.0]) == 1.0
    assert probe.score([-1000.0]) == 0.0
    assert 0.0 < probe.score([-30.0]) < 1e-12


@pytest.mark.parametrize(
    "change",
    [
        {"weights": (1.0, 2.0)},
        {"pooling": "max"},
        {"feature_scale": tuple([0.0] * 8)},
        {"threshold": 1.5},
        {"bias": math.nan},
    ],
)
def test_invalid_probes_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ProbeError):
        make_probe(**change)


def test_wrong_feature_count_and_bad_files(tmp_path: Path) -> None:
    probe = make_probe()
    with pytest.raises(ProbeError, match="reads 8 features"):
        probe.score([0.0] * 7)
    bad = tmp_path / "bad.json"
    for text in ("not json", json.dumps({"format": "other"}), json.dumps({"format": FORMAT, "layer": 1})):
        bad.write_text(text)
        with pytest.raises(ProbeError):
            load_probe(bad)
    with pytest.raises(ProbeError, match="cannot read"):
        load_probe(tmp_path / "missing.json")


def test_the_shipped_demo_probe_loads() -> None:
    path = shipped_probe_path("qwen2.5-coder-0.5b-instruct")
    if not path.exists():
        pytest.skip("no shipped probe yet")
    probe = load_probe(path)
    assert probe.size == 896 * len(probe.layers) and probe.pooling in ("mean_answer", "mean_all")
    assert 0.0 < probe.threshold < 1.0
    # Fitted on the broad data, its nested cross-validated figures per source ship with it.
    assert {"beavertails", "xstest", "onpolicy"} <= set(probe.figures["cv"])
    assert probe.figures["cv"]["xstest"]["fpr"] <= 0.08 and probe.figures["cv"]["beavertails"]["f1"] >= 0.8


def test_layers_split_the_features_and_old_single_layer_files_still_read(tmp_path: Path) -> None:
    probe = make_probe(size=8, layers=(1, 2))
    assert Probe.from_json(probe.to_json()) == probe
    with pytest.raises(ProbeError, match="do not split evenly"):
        make_probe(size=8, layers=(0, 1, 2))
    with pytest.raises(ProbeError, match="distinct"):
        make_probe(size=8, layers=(1, 1))
    with pytest.raises(ProbeError, match="distinct"):
        make_probe(size=8, layers=())
    with pytest.raises(ProbeError, match="one layer"):
        make_probe(size=8, layers=(1, 2), pooling="mean_all_l2")
    body = json.loads(make_probe().to_json())
    body["layer"] = body.pop("layers")[0]  # a file written before multi-layer probes
    old = tmp_path / "old.json"
    old.write_text(json.dumps(body))
    assert load_probe(old).layers == (1,)
