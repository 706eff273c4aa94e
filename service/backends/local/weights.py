"""How the embedded engine holds its weights: dense float32 or bfloat16, or its linear layers
also as weight-only int8 or int4 for decoding (bfloat16 activations).

Decoding one token reads every weight once, so on a CPU its speed is the bytes per weight: int4
reads an eighth of float32 (docs/engine.md). The quantised layers call torch's own CPU kernels
(`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`; what torchao's CPU layouts call too) from
a plain module, so no extra package and no tensor subclass sits on the per-token path. Both
kernels want bfloat16 activations: with float32 ones they run ten times slower.

Those kernels are matrix-vector kernels: over many rows at once (a prompt, a verdict's pass,
the latent probe's pass) they run up to thirty times slower than the bfloat16 matrix product.
So a quantised layer keeps its bfloat16 weight too and uses it for inputs of more than
`MAX_QUANTISED_ROWS` rows: prefill and the verdicts run at bfloat16 speed and read bfloat16
states, decoding reads the int8/int4 copy. The price is memory: bfloat16 plus the copy (still
less than float32).

int8 is per output channel (symmetric); int4 is asymmetric in groups of 32 inputs, the sub-block
of llama.cpp's Q4_K, so the demo model's weights — de-quantised from Q4_K_M — land back on
(nearly) the grid they came from. A layer a kernel cannot take (int4 needs out_features divisible
by 16 and in_features by 32) stays dense.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from service.settings import LocalWeights

INT4_GROUP = 32
# Up to 4 rows (decoding up to 4 choices) the int4 kernel beats bfloat16 on this CPU; from 8 it
# loses, and more with every row (bench/results/engine/README.md).
MAX_QUANTISED_ROWS = 4
_INT4_ROWS = 16  # the int4 packing works on tiles of 16 output rows
_BITS = {LocalWeights.INT8: 8, LocalWeights.INT4: 4}


class WeightsError(ValueError):
    """The weight format cannot be used here (the message says why)."""


def compute_dtype(weights: LocalWeights) -> str:
    """The dtype the model is loaded in and computes in."""
    return "float32" if weights is LocalWeights.FLOAT32 else "bfloat16"


class WeightOnlyLinear(nn.Linear):
    """A linear layer that decodes with an int8 or int4 copy of its weight (per-channel or
    per-group scales) and reads many rows at once with its bfloat16 weight.

    A subclass of nn.Linear with its `weight` and `bias`, so PEFT wraps it in a LoRA layer like
    any linear one (merging an adapter into it would change only the bfloat16 weight: the
    engine never merges)."""

    def __init__(self, linear: nn.Linear, bits: int) -> None:
        nn.Module.__init__(self)  # not nn.Linear's: it would allocate another weight
        self.in_features, self.out_features, self.bits = linear.in_features, linear.out_features, bits
        self.weight, self.bias = linear.weight, linear.bias
        weight = linear.weight.detach().float()
        if bits == 8:
            scales = (weight.abs().amax(dim=1) / 127).clamp_min(1e-12)
            self.register_buffer("qweight", torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8))
            self.register_buffer("scales", scales.to(linear.weight.dtype))
        else:
            groups = weight.reshape(self.out_features, -1, INT4_GROUP)
            low, high = groups.amin(dim=-1), groups.amax(dim=-1)
            steps = ((high - low) / 15).clamp_min(1e-12)
            codes = torch.round((groups - low[..., None]) / steps[..., None]).clamp(0, 15).to(torch.int32)
            self.register_buffer("qweight", torch.ops.aten._convert_weight_to_int4pack_for_cpu(
                codes.reshape(self.out_features, self.in_features), 1
            ))
            # The kernel computes (code - 8) * step + zero: zero is the group's middle, not its low.
            zeros = low + 8 * steps
            self.register_buffer("scales", torch.stack([steps, zeros], dim=-1).transpose(0, 1).contiguous().to(
                linear.weight.dtype
            ))

    @staticmethod
    def fits(linear: nn.Linear, bits: int) -> bool:
        if bits == 8:
            return True
        return linear.out_features % _INT4_ROWS == 0 and linear.in_features % INT4_GROUP == 0

    def forward(self, inputs: Any) -> Any:
        flat = inputs.reshape(-1, self.in_features)
        if flat.shape[0] > MAX_QUANTISED_ROWS:
            return nn.functional.linear(inputs, self.weight, self.bias)
        return self.quantised_product(flat).reshape(*inputs.shape[:-1], self.out_features)

    def quantised_product(self, flat: Any) -> Any:
        """`flat` (rows, in_features) times the int8/int4 weight, plus the bias."""
        if self.bits == 8:
            out = torch.ops.aten._weight_int8pack_mm(flat, self.qweight, self.scales)
        else:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.qweight, INT4_GROUP, self.scales)
        return out if self.bias is None else out + self.bias

    def dequantised(self) -> Any:
        """The weight decoding multiplies by, dense (out_features, in_features)."""
        eye = torch.eye(self.in_features, dtype=self.weight.dtype, device=self.weight.device)
        bias, self.bias = self.bias, None
        try:
            return torch.cat([self.quantised_product(rows) for rows in eye.split(MAX_QUANTISED_ROWS)]).T.contiguous()
        finally:
            self.bias = bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int{self.bits}"


def quantise_linears(model: Any, weights: LocalWeights) -> int:
    """Replace `model`'s linear layers by weight-only int8/int4 ones in place (no-op for dense
    formats); returns how many were replaced. WeightsError unless the model is on the CPU in
    bfloat16 (the kernels are CPU kernels)."""
    bits = _BITS.get(weights)
    if bits is None:
        return 0
    if model.device.type != "cpu" or model.dtype != torch.bfloat16:
        raise WeightsError(f"{weights} weights need the model on the CPU in bfloat16, not {model.device} {model.dtype}")
    replaced = 0
    with torch.no_grad():
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Linear and WeightOnlyLinear.fits(child, bits):
                    setattr(parent, name, WeightOnlyLinear(child, bits))
                    replaced += 1
    return replaced
