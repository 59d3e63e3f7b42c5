"""Batch-1 inference latency of a case's quantized .tflite beside its float control, in LiteRT.

A last-N file is a mixed graph: activations cross a QUANTIZE into int8 and a DEQUANTIZE back, so
small N can be slower than float and pay only past some N. What a practitioner needs is the ratio
quantized/control on the runtime devices ship, not an absolute time (which belongs to one machine).

How: both files are loaded in LiteRT with 1 thread at batch 1 and timed in interleaved rounds, the
order rotating from round to round (as harness/tools/steptime.py's train steps), so machine noise hits
both alike. Each round gives a median invoke time per file and one ratio; the record holds the
median over rounds of each and of the ratio, with the order-statistic 95% interval of the ratio's
median (harness/results/seedstats.median_interval). The time is bounded: the invokes per round are
scaled so all rounds together take about BUDGET_MS, with ROUNDS rounds, and never fewer than the
MIN_ROUNDS the interval needs. Nothing asserts a speed: records and reports only show it.

``load`` and ``interleaved`` are the one way inference is timed here: `python -m harness perf` times its
whole-model float, W8 and W4 files with them too (any runtime, any batch, any number of files per round).
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from harness.case import audit
from harness.case.evaluate import LITERT, interpreter, one_line, runtime_name
from harness.results.seedstats import MIN_ROUNDS_FOR_INTERVAL, median_interval

ENV = "QATBENCH_LATENCY"  # "off": no timing unless --qat-latency on (the unit tests set it)
ROUNDS = 12  # 12 rounds: the 95% interval of the median is the 2nd to 11th of the ratios
MIN_ROUNDS = MIN_ROUNDS_FOR_INTERVAL
BUDGET_MS = 400.0  # both files' invokes together, per case; with loading ~0.9 s a case, ~45 s for the 51-case smoke tier
THREADS = 1  # one thread: the ratio of kernels, not of how well each file parallelises on this machine
WARMUP = 3  # invokes before timing: first runs pay for packing weights and allocating
OPS = ("QUANTIZE", "DEQUANTIZE")


def enabled(option) -> bool:
    """--qat-latency on/off if given (True/False), else $QATBENCH_LATENCY (default on)."""
    if option is not None:
        return bool(option)
    return os.environ.get(ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def op_fields(content: bytes) -> dict:
    """The QUANTIZE and DEQUANTIZE ops in the file: the activation crossings each inference pays."""
    counts = audit.op_counts(content)
    return {"quantize_ops": counts.get("QUANTIZE", 0), "dequantize_ops": counts.get("DEQUANTIZE", 0)}


def _empty(runtime) -> dict:
    return {"latency_quant_ms": None, "latency_control_ms": None, "latency_ratio": None,
            "latency_ratio_ci95": None, "latency_rounds": None, "latency_invokes": None,
            "latency_threads": None, "latency_runtime": runtime}


def fields(quant: bytes, control: bytes, x: np.ndarray, on: bool = True) -> dict:
    """The record's latency fields: ops always, timing when ``on``. A runtime that cannot time the
    files leaves the times None and says why in ``latency_runtime`` (never a different runtime's time)."""
    out = {**op_fields(quant), **_empty(None if on else "not measured: latency timing off")}
    if not on:
        return out
    try:
        out.update(measure(quant, control, x))
    except Exception as exc:  # noqa: BLE001 - LiteRT raises RuntimeError, ValueError, ImportError...
        out["latency_runtime"] = f"not measured: {one_line(exc)}"
    return out


def load(content: bytes, x: np.ndarray, runtime: str = LITERT, batch: int = 1, threads: int = THREADS):
    """An interpreter of ``content`` in ``runtime`` with ``threads`` threads, resized to the first ``batch``
    rows of ``x``, its input set and warmed up (WARMUP invokes)."""
    interp = interpreter(content, threads=threads, runtime=runtime)
    detail = interp.get_input_details()[0]
    rows = np.ascontiguousarray(x[:batch], dtype=detail["dtype"])  # token ids stay integers
    interp.resize_tensor_input(detail["index"], rows.shape)
    interp.allocate_tensors()
    interp.set_tensor(detail["index"], rows)
    for _ in range(WARMUP):
        interp.invoke()
    return interp


def interleaved(interps: dict, rounds: int, invokes: int) -> dict:
    """name -> per-round median invoke ms of each interpreter: every round times every one, the order
    shifted by one from round to round, so that none always runs right after another."""
    names = list(interps)
    samples: dict = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(_invoke_ms(interps[name], invokes))
    return samples


def _invoke_ms(interp, invokes: int) -> float:
    """Median ms of ``invokes`` timed invokes: robust to one preempted invoke."""
    times = []
    for _ in range(invokes):
        start = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000.0


def plan(quant_ms: float, control_ms: float, budget_ms: float = BUDGET_MS, rounds: int = ROUNDS) -> tuple:
    """(rounds, invokes per file per round) that fit ``budget_ms`` given one invoke of each. Slow files
    get fewer rounds, but never fewer than MIN_ROUNDS (the interval needs them) nor fewer than 1 invoke. Pure."""
    pair_ms = max(quant_ms + control_ms, 1e-6)
    rounds = max(MIN_ROUNDS, min(rounds, math.floor(budget_ms / pair_ms)))
    return rounds, max(1, math.floor(budget_ms / (rounds * pair_ms)))


def summarise(quant_ms: list, control_ms: list) -> dict:
    """Medians over rounds and the ratio's median with its order-statistic 95% interval. Pure."""
    ratios = [q / c for q, c in zip(quant_ms, control_ms)]
    low, high = median_interval(ratios)
    return {"latency_quant_ms": float(np.median(quant_ms)), "latency_control_ms": float(np.median(control_ms)),
            "latency_ratio": float(np.median(ratios)), "latency_ratio_ci95": None if low is None else [low, high],
            "latency_rounds": len(ratios)}


def measure(quant: bytes, control: bytes, x: np.ndarray, budget_ms: float = BUDGET_MS, rounds: int = ROUNDS) -> dict:
    """Interleaved rounds of both files in this process; quant and control swap order every round."""
    interps = {"quant": load(quant, x), "control": load(control, x)}
    once = {name: _invoke_ms(interp, 3) for name, interp in interps.items()}
    rounds, invokes = plan(once["quant"], once["control"], budget_ms, rounds)
    samples = interleaved(interps, rounds, invokes)
    return {**summarise(samples["quant"], samples["control"]), "latency_invokes": invokes,
            "latency_threads": THREADS, "latency_runtime": runtime_name(LITERT)}
