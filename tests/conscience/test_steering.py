"""Repair by steering, the conscience's side (service/conscience/steering.py): the probe's harm
direction in residual space, its standardisation undone, and which backend repairs draft through."""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import pytest
from pydantic import ValidationError

from service.conscience.probe import Probe, ProbeError
from service.conscience.stack import ConscienceKnobs, build_repairer, repair_backend
from service.conscience.steering import SteeringSpec, steering_from_probe
from service.core.backend import JSON
from service.settings import Settings

Floats = tuple[float, ...]


def probe(weights: Floats, scale: Floats, mean: Floats, layers: tuple[int, ...]) -> Probe:
    return Probe(
        model_fingerprint="f" * 64, layers=layers, pooling="mean_answer", weights=weights, bias=-0.5,
        feature_mean=mean, feature_scale=scale, threshold=0.5, target_fpr=0.05, data_sha256="d" * 64,
    )


def test_the_direction_is_the_weights_over_the_scales_and_the_offset_the_mean_along_it() -> None:
    made = probe(
        weights=(3.0, 4.0, 0.0, 2.0), scale=(1.0, 2.0, 1.0, 0.5), mean=(1.0, 1.0, 5.0, 3.0), layers=(12, 16)
    )
    spec = steering_from_probe(made, 2.0)
    assert spec.layers == (12, 16) and spec.alpha == 2.0
    # Layer 12: d = (3/1, 4/2) = (3, 2); layer 16: d = (0/1, 2/0.5) = (0, 4).
    norm = math.sqrt(13)
    assert spec.directions[0] == pytest.approx((3 / norm, 2 / norm))
    assert spec.directions[1] == pytest.approx((0.0, 1.0))
    assert spec.offsets == pytest.approx(((3 + 2) / norm, 3.0))


def test_a_states_logit_share_along_the_direction_is_what_the_probe_reads() -> None:
    """Moving a feature vector along a layer's direction by `t` moves the probe's logit by
    `|d| * t`: the direction is the probe's own, in the units the model's states have."""
    made = probe(weights=(3.0, 4.0), scale=(1.0, 2.0), mean=(1.0, 1.0), layers=(12,))
    spec = steering_from_probe(made, 1.0)
    x = [0.3, -0.7]
    moved = [value + 0.5 * u for value, u in zip(x, spec.directions[0], strict=True)]
    assert made.logit(moved) - made.logit(x) == pytest.approx(0.5 * math.sqrt(13))


def test_a_layer_without_weight_is_left_out_and_a_probe_without_any_cannot_steer() -> None:
    spec = steering_from_probe(probe((0.0, 0.0, 1.0, 0.0), (1.0,) * 4, (0.0,) * 4, (12, 16)), 1.0)
    assert spec.layers == (16,)
    with pytest.raises(ProbeError, match="no harm direction"):
        steering_from_probe(probe((0.0, 0.0), (1.0, 1.0), (0.0, 0.0), (12,)), 1.0)
    with pytest.raises(ProbeError, match="normalised embedding"):
        steering_from_probe(replace(probe((1.0, 0.0), (1.0, 1.0), (0.0, 0.0), (24,)), pooling="mean_all_l2"), 1.0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"layers": (0,)}, "decoder layer outputs"),
        ({"alpha": -1.0}, "non-negative"),
        ({"alpha": math.nan}, "non-negative"),
        ({"directions": ((2.0, 0.0),)}, "unit vector"),
        ({"offsets": ()}, "one direction and one offset"),
    ],
)
def test_a_spec_that_cannot_steer_is_refused(fields: dict[str, object], message: str) -> None:
    good: dict[str, object] = {"layers": (3,), "directions": ((0.6, 0.8),), "offsets": (0.0,), "alpha": 1.0}
    with pytest.raises(ValueError, match=message):
        SteeringSpec(**{**good, **fields})  # type: ignore[arg-type]


class SteerableProbeBackend:
    """Just enough of a backend that can steer and has a latent probe (the embedded engine)."""

    def __init__(self, made: Probe | None) -> None:
        self.probe = made
        self.steered_with: list[SteeringSpec] = []

    async def latent_score(self, messages: list[JSON], answer: str) -> float:
        return 0.0

    def steered(self, steering: SteeringSpec) -> object:
        self.steered_with.append(steering)
        return ("steered", steering)


def test_repairs_draft_through_a_steered_view_only_when_the_setting_asks_and_the_backend_can() -> None:
    made = probe((3.0, 4.0), (1.0, 2.0), (1.0, 1.0), (12,))
    on = replace(ConscienceKnobs(), repair_steering_alpha=4.0)
    steerable = SteerableProbeBackend(made)
    drafting = repair_backend(steerable, on)  # type: ignore[arg-type]
    assert drafting == ("steered", steering_from_probe(made, 4.0))
    assert build_repairer(steerable, on)._backend == drafting  # type: ignore[arg-type]
    off = replace(ConscienceKnobs(), repair_steering_alpha=0.0)
    assert repair_backend(steerable, off) is steerable  # type: ignore[arg-type]
    no_probe = SteerableProbeBackend(None)
    assert repair_backend(no_probe, on) is no_probe  # type: ignore[arg-type]
    upstream = object()  # cannot steer (an OpenAI-compatible server)
    assert repair_backend(upstream, on) is upstream  # type: ignore[arg-type]


def test_steering_asked_of_a_backend_that_cannot_steer_says_so(caplog: pytest.LogCaptureFixture) -> None:
    on = replace(ConscienceKnobs(), repair_steering_alpha=4.0)
    with caplog.at_level(logging.WARNING, logger="conscience.stack"):
        repair_backend(object(), on)  # type: ignore[arg-type]
    assert "cannot steer" in caplog.text


def test_the_setting_is_off_by_default_and_refuses_a_negative_alpha(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().repair.steering_alpha == 0.0
    monkeypatch.setenv("CONSCIENCE_REPAIR__STEERING_ALPHA", "4")
    assert ConscienceKnobs.from_settings(Settings()).repair_steering_alpha == 4.0
    with pytest.raises(ValidationError, match="repair.steering_alpha"):
        Settings(repair_steering_alpha=-1.0)
