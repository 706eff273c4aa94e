"""Steering on the model thread: forward hooks on the decoder layers that apply a `SteeringSpec`
(service/conscience/steering.py) to their outputs, for one forward pass at a time.

A generation installs the hooks around each of its own forward passes (prefill and every decode
step) and removes them at once, so that the other generations the scheduler interleaves with it
and the latent verdict's passes between its steps read the model as it is. Each hook is put
first (`prepend`), ahead of transformers' own hooks that record `output_hidden_states`, which so
record the steered states.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from service.conscience.steering import SteeringSpec


def decoder_layers(model: Any) -> Any:
    """The model's decoder layers (a ModuleList of `num_hidden_layers`), whatever wraps them (a
    causal-LM head, peft)."""
    count = int(model.config.num_hidden_layers)
    for name, module in model.named_modules():
        if name.rpartition(".")[2] == "layers" and hasattr(module, "__len__") and len(module) == count:
            return module
    raise ValueError("the model has no list of decoder layers to steer")


class Steering:
    """A `SteeringSpec` as tensors on the model's device, checked against the model; `hooked()`
    applies it for the duration of one forward pass."""

    def __init__(self, model: Any, spec: SteeringSpec) -> None:
        import torch

        layers = decoder_layers(model)
        hidden = int(model.config.hidden_size)
        # The last hidden state the probe numbers is the final norm's output, which no decoder
        # layer writes: a probe direction read there is not one of the residual stream's.
        if max(spec.layers) >= len(layers):
            raise ValueError(f"steering layers must be in 1..{len(layers) - 1} (got {spec.layers})")
        if any(len(direction) != hidden for direction in spec.directions):
            raise ValueError(f"steering directions must have the model's hidden size {hidden}")
        device = next(model.parameters()).device
        self._targets = [
            (layers[layer - 1], torch.tensor(direction, dtype=torch.float32, device=device), offset)
            for layer, direction, offset in zip(spec.layers, spec.directions, spec.offsets, strict=True)
        ]
        self._alpha = spec.alpha

    @contextlib.contextmanager
    def hooked(self) -> Iterator[None]:
        handles = [
            module.register_forward_hook(self._hook(direction, offset), prepend=True)
            for module, direction, offset in self._targets
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, direction: Any, offset: float) -> Any:
        alpha = self._alpha

        def steer(_module: Any, _inputs: Any, output: Any) -> Any:
            states = output[0] if isinstance(output, tuple) else output
            along = states.float() @ direction  # [..., T]: each position's component along the direction
            excess = (along - offset).clamp_min(0.0)
            steered = (states.float() - alpha * excess.unsqueeze(-1) * direction).to(states.dtype)
            return (steered, *output[1:]) if isinstance(output, tuple) else steered

        return steer
