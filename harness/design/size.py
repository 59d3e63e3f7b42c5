"""Exact size accounting for a partially quantized .tflite. Pure.

Weight bytes of a unit: its kernel at the storage width (INT8, or nibble-packed INT4),
plus its bias at 4 bytes (int32 when quantized, float32 otherwise). Float units store
every weight as float32. Per-channel scales and zero points live in the flatbuffer's
quantization tables, not in buffers; they are reported separately.

A boundary fix (a selected unit whose input comes from an unselected BatchNormalization with no
activation behind it: harness/case/quantize.boundary_fixes) fake-quantizes that BN's output, so the
converter can no longer fold it into its float conv: the conv keeps a (zero) float bias of the same
size as the folded one, and the BN becomes a float MUL and ADD with one float32 constant per channel
each. Those constants are not kernels: the audit counts them in ``other_const_bytes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from harness.design.config import QuantConfig
from harness.design.units import Unit

FLOAT_BYTES = 4
BIAS_BYTES = 4


def packed_bytes(count: int, bits: int) -> int:
    """Bytes needed to store ``count`` values of ``bits`` bits, densely packed."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in 1..32, got {bits}")
    return math.ceil(count * bits / 8)


def unit_bytes(unit: Unit, quantized: bool, bits: int) -> int:
    if not quantized:
        return (unit.kernel_params + unit.bias_params) * FLOAT_BYTES
    return packed_bytes(unit.kernel_params, bits) + unit.bias_params * BIAS_BYTES


@dataclass(frozen=True)
class SizePrediction:
    weight_bytes: int  # what the flatbuffer stores (INT8 for 5-8 bits, INT4 for 2-4)
    ideal_bytes: int  # the same at exactly weight_bits per weight
    float_bytes: int  # the whole model in float32
    quantized_kernels: int
    boundary_const_bytes: int = 0  # float constants the boundary fixes add (not weight bytes)

    @property
    def compression(self) -> float:
        return self.float_bytes / self.weight_bytes if self.weight_bytes else float("inf")


def predict(units: Sequence[Unit], chosen: Sequence[Unit], quant: QuantConfig) -> SizePrediction:
    chosen_ix = {u.index for u in chosen}
    stored = sum(unit_bytes(u, u.index in chosen_ix, quant.storage_bits) for u in units)
    ideal = sum(unit_bytes(u, u.index in chosen_ix, quant.weight_bits) for u in units)
    float_total = sum(unit_bytes(u, False, 32) for u in units)
    kernels = sum(u.kernels for u in chosen)
    return SizePrediction(stored, ideal, float_total, kernels, boundary_const_bytes(chosen))


def fix_const_bytes(class_name: str, channels: int) -> int:
    """Constants a boundary fix on a layer of ``class_name`` adds to the file: an unfolded BN's scale
    and offset (MUL and ADD, float32 per channel); other producers (a ZeroPadding2D, a Multiply, an
    activation) compute as they did, only their output is quantized."""
    return 2 * channels * FLOAT_BYTES if class_name == "BatchNormalization" else 0


def boundary_const_bytes(chosen: Sequence[Unit]) -> int:
    fixes = {name: (cls, channels) for u in chosen for name, cls, channels in u.input_fixes}
    return sum(fix_const_bytes(cls, channels) for cls, channels in fixes.values())
