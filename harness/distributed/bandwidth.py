"""Network cost of distributed fine-tuning and of shipping its result. Pure: no TensorFlow.

- Gradient all-reduce: a ring all-reduce of P float32 gradients over W workers sends
  2(W-1)/W x P x 4 bytes per worker per step, 2(W-1) x P x 4 bytes in total. Fake-quant keeps
  float gradients, so this does not depend on how many units are quantized.
- Measured: bytes through the loopback interface (psutil, machine-wide) during fit. Only valid
  when nothing else on the machine uses loopback (not under pytest-xdist).
- Payload: bytes to ship the fine-tuned deployable model (.tflite), and the selected units alone
  at their stored width, against the same in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import psutil

from harness.options import xdist_worker
from harness.design import size
from harness.design.config import QuantConfig
from harness.design.units import Unit

GRAD_BYTES = 4  # float32 gradients: fake-quant keeps them float
LOOPBACK_NAMES = ("lo", "lo0")
MEASURED_NOTE = ("machine-wide loopback counters (psutil) around fit: every byte any process sends "
                 "to 127.0.0.1 counts; valid only when nothing else runs (not under xdist)")


def ring_allreduce_bytes(params: int, workers: int, dtype_bytes: int = GRAD_BYTES) -> tuple:
    """(bytes sent per worker, bytes sent by all workers) for one ring all-reduce of ``params`` values."""
    if workers < 1 or params < 0:
        raise ValueError(f"need workers >= 1 and params >= 0, got {workers}, {params}")
    per_worker = 2 * (workers - 1) / workers * params * dtype_bytes
    return per_worker, per_worker * workers


@dataclass(frozen=True)
class Loopback:
    """A reading of the loopback interface's counters."""

    sent: int
    recv: int

    def __sub__(self, other: "Loopback") -> "Loopback":
        return Loopback(self.sent - other.sent, self.recv - other.recv)


def loopback() -> Optional[Loopback]:
    counters = psutil.net_io_counters(pernic=True)
    for name in LOOPBACK_NAMES:
        if name in counters:
            return Loopback(counters[name].bytes_sent, counters[name].bytes_recv)
    return None


def measured_valid_here(in_process: bool) -> bool:
    """Loopback bytes mean something only for separate processes and with no parallel xdist workers."""
    return not in_process and xdist_worker() is None


@dataclass(frozen=True)
class FitTraffic:
    """What one distributed fit moved, and what the ring formula says it should."""

    label: str  # "qat" or "float"
    steps: int
    trainable_params: int
    loopback_bytes: Optional[int]  # bytes sent on loopback during fit (= bytes received there)

    def predicted_total(self, workers: int) -> float:
        return ring_allreduce_bytes(self.trainable_params, workers)[1] * self.steps


def traffic_fields(qat: FitTraffic, control: Optional[FitTraffic], workers: int, devices: int,
                   valid: bool, quantizer_sync: dict, transport: str) -> dict:
    """Record fields for the gradient all-reduce of the QAT fit (and the float control's, beside it).
    The QAT-minus-float loopback difference per step is the measured quantizer-variable sync."""
    per_worker, total = ring_allreduce_bytes(qat.trainable_params, workers)
    measured = qat.loopback_bytes
    extra = None
    if valid and control is not None and measured is not None and control.loopback_bytes is not None and qat.steps:
        extra = (measured - control.loopback_bytes) / qat.steps
    fields = {
        "devices": devices,
        "allreduce_transport": transport,
        "trainable_params": qat.trainable_params,
        "allreduce_bytes_per_step_per_worker_predicted": per_worker,
        "allreduce_bytes_per_step_predicted": total,
        "allreduce_bytes_predicted": total * qat.steps,
        "loopback_bytes_measured": measured,
        "loopback_bytes_per_step_measured": measured / qat.steps if measured is not None and qat.steps else None,
        "measured_over_predicted": measured / (total * qat.steps) if measured and total else None,
        "measured_valid": bool(valid),
        "measured_note": MEASURED_NOTE,
        "quantizer_sync": {**quantizer_sync, "measured_extra_bytes_per_step": extra},
        "control_allreduce_bytes_predicted": control.predicted_total(workers) if control else None,
        "control_loopback_bytes_measured": control.loopback_bytes if control else None,
    }
    return fields


def quantizer_sync_estimate(synced_scalars: int, local_scalars: int, workers: int, synced_vars: int,
                            local_vars: int) -> dict:
    """Quantizer min/max variables: activation ranges are an EMA updated with assign_moving_average,
    which all-reduces (MEAN) the new value every step; weight ranges are plain assigns of a replica's
    own min/max (aggregation NONE: no traffic; equal anyway since the weights are synced)."""
    return {
        "synced_vars": synced_vars,
        "synced_scalars": synced_scalars,
        "local_vars": local_vars,
        "local_scalars": local_scalars,
        "predicted_bytes_per_step": ring_allreduce_bytes(synced_scalars, workers)[1],
        "how": "activation EMA min/max: all-reduced (MEAN) each step, one small collective per "
               "variable; weight min/max: assigned per replica, not synced",
    }


def payload_fields(units: Sequence[Unit], chosen: Sequence[Unit], quant: QuantConfig, tflite_bytes: int,
                   control_tflite_bytes: int, quantized_kernel_bytes: int) -> dict:
    """Bytes to ship the fine-tuned model: the whole .tflite, or the selected units alone."""
    units_float = sum(size.unit_bytes(u, False, 32) for u in chosen)
    return {
        "payload_tflite_bytes": tflite_bytes,
        "payload_float_tflite_bytes": control_tflite_bytes,
        "payload_units_bytes": quantized_kernel_bytes,
        "payload_units_predicted_bytes": sum(size.unit_bytes(u, True, quant.storage_bits) for u in chosen),
        "payload_units_float_bytes": units_float,
        "payload_model_float_bytes": sum(size.unit_bytes(u, False, 32) for u in units),
    }
