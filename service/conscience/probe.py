"""A latent probe: the frozen model's verdict read from its hidden states.

A probe is a logistic regression over pooled hidden states of the frozen (served) model: one or
more layers, each pooled the same way (service/backends/local/hidden_states.py says which
positions), concatenated in the order `layers` lists them. It is a small JSON
artefact: the model's fingerprint, the layers and pooling, the standardisation (feature mean and
scale), the weights and bias, the threshold chosen at a target false-positive rate, the sha256 of
the data it was fitted on and its cross-validated figures.

Scoring is pure Python (no numpy, no torch): `sigmoid(bias + sum(w_i * (x_i - mean_i) / scale_i))`.

The fingerprint identifies the served model, so that a probe is never read from another model's
activations (`ProbeMismatch`). It is the sha256 of a canonical JSON object of:
- the architecture (config `architectures`, `model_type`), `hidden_size`, `num_hidden_layers`,
  `vocab_size` (the config's);
- a sha256 per sampled weight tensor — by default the first 1,024 rows of the token embedding, the
  first decoder layer's query projection, the last decoder layer's down projection and the final
  norm (`FINGERPRINT_TENSORS`) — each taken in bfloat16, so the same weights loaded as float32 or
  bfloat16 share one fingerprint, while a fine-tune or another quantisation does not.
The tensors' digests are computed where the weights are (hidden_states.model_fingerprint); this
module only combines them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from service.core.backend import JSON

FORMAT = "conscience-probe/1"
# mean_all_l2: mean_all scaled to unit length — what an embeddings endpoint with mean pooling
# returns (normalised or not: the proxy normalises it again), read from the final layer.
POOLINGS = ("mean_answer", "mean_all", "mean_all_l2")
# (parameter name pattern, rows kept or None for all); "{last}" is the last decoder layer's index.
FINGERPRINT_TENSORS: tuple[tuple[str, int | None], ...] = (
    ("model.embed_tokens.weight", 1024),
    ("model.layers.0.self_attn.q_proj.weight", None),
    ("model.layers.{last}.mlp.down_proj.weight", None),
    ("model.norm.weight", None),
)
_CONFIG_FIELDS = ("architectures", "model_type", "hidden_size", "num_hidden_layers", "vocab_size")


@runtime_checkable
class LatentBackend(Protocol):
    """A backend that can read the frozen model's latent verdict (`judge_style` latent): its
    probe over the model's hidden states — the embedded engine's own forward pass, or an
    upstream embeddings endpoint serving the base model. `probe` None: it cannot. The
    conscience owns this protocol; the backends, a layer above, implement it."""

    @property
    def probe(self) -> Probe | None: ...

    async def latent_score(self, messages: list[JSON], answer: str) -> float:
        """The probe's P(unethical) for `answer` as the assistant turn after `messages`."""


class ProbeError(ValueError):
    """A probe file that cannot be read or used."""


class ProbeMismatch(ProbeError):
    """The probe was fitted on another model's activations than the one served."""


def fingerprint(config: Mapping[str, Any], tensor_digests: Mapping[str, str]) -> str:
    """sha256 hex of the model's identifying config fields and sampled weight digests.

    `config`: the model config as a dict (`model.config.to_dict()`); `tensor_digests`: parameter
    name -> sha256 hex of its sampled bfloat16 bytes.
    """
    missing = [name for name in _CONFIG_FIELDS if name not in config]
    if missing:
        raise ProbeError(f"the model config lacks {missing} needed for a fingerprint")
    identity = {
        "config": {name: config[name] for name in _CONFIG_FIELDS},
        "tensors": dict(sorted(tensor_digests.items())),
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True, slots=True)
class Probe:
    model_fingerprint: str
    layers: tuple[int, ...]  # features: each layer's pooled state, concatenated in this order
    pooling: str
    weights: tuple[float, ...]
    bias: float
    feature_mean: tuple[float, ...]
    feature_scale: tuple[float, ...]
    threshold: float
    target_fpr: float
    data_sha256: str
    max_answer_tokens: int | None = 384
    model_name: str = ""
    figures: dict[str, Any] = field(default_factory=dict)  # cross-validated figures, as measured

    def __post_init__(self) -> None:
        size = len(self.weights)
        if not self.layers or any(layer < 0 for layer in self.layers) or len(set(self.layers)) != len(self.layers):
            raise ProbeError(f"layers must be distinct non-negative layer numbers (got {self.layers})")
        if size % len(self.layers):
            raise ProbeError(f"{size} weights do not split evenly over {len(self.layers)} layers")
        if self.pooling == "mean_all_l2" and len(self.layers) > 1:
            raise ProbeError("mean_all_l2 is an embeddings endpoint's vector: it reads one layer")
        if size == 0 or len(self.feature_mean) != size or len(self.feature_scale) != size:
            raise ProbeError(
                f"weights, feature_mean and feature_scale must have one equal, non-zero length "
                f"(got {size}, {len(self.feature_mean)}, {len(self.feature_scale)})"
            )
        if self.pooling not in POOLINGS:
            raise ProbeError(f"unknown pooling {self.pooling!r}; one of {POOLINGS}")
        numbers = (*self.weights, *self.feature_mean, *self.feature_scale, self.bias, self.threshold)
        if not all(math.isfinite(value) for value in numbers):
            raise ProbeError("the probe holds a value that is not a finite number")
        if any(scale <= 0 for scale in self.feature_scale):
            raise ProbeError("feature scales must be positive")
        if not 0.0 <= self.threshold <= 1.0:
            raise ProbeError(f"threshold {self.threshold} is not a probability")

    @property
    def size(self) -> int:
        return len(self.weights)

    def logit(self, features: Sequence[float]) -> float:
        if len(features) != self.size:
            raise ProbeError(f"the probe reads {self.size} features, got {len(features)}")
        total = self.bias
        for x, w, mean, scale in zip(features, self.weights, self.feature_mean, self.feature_scale, strict=True):
            total += w * (x - mean) / scale
        return total

    def score(self, features: Sequence[float]) -> float:
        """Probability that the answer is unethical; flagged at or above `threshold`."""
        value = self.logit(features)
        if not math.isfinite(value):
            raise ProbeError("the features give a score that is not a finite number")
        return _sigmoid(value)

    def flagged(self, features: Sequence[float]) -> bool:
        return self.score(features) >= self.threshold

    def check_model(self, model_fingerprint: str) -> None:
        if model_fingerprint != self.model_fingerprint:
            raise ProbeMismatch(
                f"this probe was fitted for model {self.model_name or '?'} (fingerprint "
                f"{self.model_fingerprint[:12]}…), not the served model (fingerprint "
                f"{model_fingerprint[:12]}…); fit one for it with `conscience calibrate --probe`"
            )

    def to_json(self) -> str:
        body = {"format": FORMAT, **asdict(self)}
        return json.dumps(body, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Probe:
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise ProbeError(f"not a probe file: {exc}") from exc
        if not isinstance(body, dict) or body.pop("format", None) != FORMAT:
            raise ProbeError(f"not a probe file (format is not {FORMAT!r})")
        try:
            return cls(
                model_fingerprint=str(body["model_fingerprint"]),
                # Probes written before multi-layer probes name one `layer`.
                layers=tuple(int(v) for v in body["layers"]) if "layers" in body else (int(body["layer"]),),
                pooling=str(body["pooling"]),
                weights=tuple(float(v) for v in body["weights"]),
                bias=float(body["bias"]),
                feature_mean=tuple(float(v) for v in body["feature_mean"]),
                feature_scale=tuple(float(v) for v in body["feature_scale"]),
                threshold=float(body["threshold"]),
                target_fpr=float(body["target_fpr"]),
                data_sha256=str(body["data_sha256"]),
                max_answer_tokens=(None if body.get("max_answer_tokens") is None else int(body["max_answer_tokens"])),
                model_name=str(body.get("model_name", "")),
                figures=dict(body.get("figures") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ProbeError):
                raise
            raise ProbeError(f"malformed probe file: {exc!r}") from exc

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json() + "\n")
        tmp.replace(path)


def load_probe(path: Path, *, model_fingerprint: str | None = None) -> Probe:
    """Read a probe file; with `model_fingerprint`, refuse (ProbeMismatch) one for another model."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ProbeError(f"cannot read probe {path}: {exc}") from exc
    probe = Probe.from_json(text)
    if model_fingerprint is not None:
        probe.check_model(model_fingerprint)
    return probe


SHIPPED_DIR = Path(__file__).parent / "probes"


def shipped_probe_path(name: str) -> Path:
    """The probe shipped for a demo model, e.g. `qwen2.5-coder-0.5b-instruct`."""
    return SHIPPED_DIR / f"{name}.json"
