"""Repair by steering (issue 28, an experiment): the probe's harm direction, to push a
generation away from what the latent judge would flag.

A latent probe (service/conscience/probe.py) scores `sigmoid(bias + sum_l d_l · (x_l - m_l))`
where, for each of its layers `l`, `x_l` is the pooled hidden state, `m_l` the probe's feature
mean and `d_l = w_l / s_l` its weights with the standardisation undone (`s_l` the feature
scale). So `u_l = d_l / |d_l|` is the layer's harm direction in residual space, and
`|d_l| · (h - m_l) · u_l` is one token's share of the logit there.

A steered generation subtracts, at each probe layer and at every position (prompt and answer),

    h <- h - alpha * max(0, h · u_l - m_l · u_l) * u_l

— the part of the state's component along `u_l` that lies on the harmful side of the probe's
mean. Chosen over a fixed shift (`h - alpha * u_l`, activation addition) because it moves only
tokens the probe reads as harmful, and only as far as they are (a harmless token is left as it
is, so a harmless draft is not pushed off its course), and because `alpha` needs no scale per
layer: 1 brings a token's share of the logit at that layer down to the probe's mean, 2
reflects it about the mean. The hooks that apply it live with the embedded engine
(service/backends/local/steering.py); a backend that can steer offers `steered(spec)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from service.conscience.probe import Probe, ProbeError
from service.core.backend import Backend


@dataclass(frozen=True, slots=True)
class SteeringSpec:
    """Steering of one generation: for each of `layers` (hidden-state numbers as the probe
    counts them: `l` is the output of decoder layer `l`, 1-based), a unit `direction` in
    residual space and the `offset` along it below which a state is left alone; `alpha` how
    far past the offset a state is pulled back (1: to the offset)."""

    layers: tuple[int, ...]
    directions: tuple[tuple[float, ...], ...]
    offsets: tuple[float, ...]
    alpha: float

    def __post_init__(self) -> None:
        if not self.layers or len(set(self.layers)) != len(self.layers) or min(self.layers) < 1:
            raise ValueError(f"steering layers must be distinct decoder layer outputs (≥ 1), got {self.layers}")
        if len(self.directions) != len(self.layers) or len(self.offsets) != len(self.layers):
            raise ValueError("steering needs one direction and one offset per layer")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"steering alpha must be a non-negative number, got {self.alpha}")
        for direction in self.directions:
            norm = math.sqrt(sum(value * value for value in direction))
            if not math.isclose(norm, 1.0, rel_tol=1e-4):
                raise ValueError(f"a steering direction must be a unit vector (its norm is {norm:.6f})")


def steering_from_probe(probe: Probe, alpha: float) -> SteeringSpec:
    """The probe's harm direction per layer (weights over feature scales, normalised) and the
    probe's feature mean along it. A layer whose weights are all zero gives no direction and
    is left out; a probe that gives none at all, or reads an embeddings endpoint's normalised
    vector (`mean_all_l2`, not the residual stream), cannot steer (ProbeError)."""
    if probe.pooling == "mean_all_l2":
        raise ProbeError("a mean_all_l2 probe reads a normalised embedding, not the residual stream")
    size = probe.size // len(probe.layers)
    layers, directions, offsets = [], [], []
    for block, layer in enumerate(probe.layers):
        part = slice(block * size, (block + 1) * size)
        raw = [w / s for w, s in zip(probe.weights[part], probe.feature_scale[part], strict=True)]
        norm = math.sqrt(sum(value * value for value in raw))
        if norm == 0.0 or layer == 0:  # layer 0 is the embedding output: no decoder layer writes it
            continue
        unit = tuple(value / norm for value in raw)
        layers.append(layer)
        directions.append(unit)
        offsets.append(sum(m * u for m, u in zip(probe.feature_mean[part], unit, strict=True)))
    if not layers:
        raise ProbeError("the probe has no harm direction to steer along (all its weights are zero)")
    return SteeringSpec(tuple(layers), tuple(directions), tuple(offsets), alpha)


@runtime_checkable
class SteerableBackend(Protocol):
    """A backend whose generations can be steered (the embedded engine): `steered(spec)` is a
    view of it whose chat and completion generations are all steered by `spec`; judging
    through it, or through the backend itself, is not."""

    def steered(self, steering: SteeringSpec) -> Backend: ...
