"""The thresholds a record must meet, from its model's spec. Pure: returns violations, asserts nothing."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from .config import Thresholds


def violations(record: dict, thresholds: Thresholds) -> list:
    """One line per broken threshold; empty when the case passes."""
    found = []
    bits = record["weight_bits"]
    if record["quantized_kernels"] != record["selected_kernels"]:
        found.append(f"audit: {record['quantized_kernels']} quantized kernels in the .tflite, "
                     f"{record['selected_kernels']} selected ({record['audit']['kernel_dtypes']})")
    if record["size_error_rel"] > thresholds.size_tolerance:
        found.append(f"size: predicted {record['predicted_weight_bytes']} B vs measured {record['weight_bytes']} B "
                     f"({record['size_error_rel']:.2%} > {thresholds.size_tolerance:.0%})")
    bound = thresholds.drop_bound(bits)
    if bound is not None and record["accuracy_drop_pp"] > bound:
        found.append(f"accuracy drop {record['accuracy_drop_pp']:.2f} pp > {bound} pp allowed at {bits} bits")
    if record["deployment"] != "simulated" and record.get("quant_accuracy_keras") is not None:
        gap = abs(record["quant_accuracy"] - record["quant_accuracy_keras"]) * 100
        if gap > thresholds.tflite_vs_keras_pp:
            found.append(f"TFLite accuracy {record['quant_accuracy']:.4f} differs from Keras "
                         f"{record['quant_accuracy_keras']:.4f} by {gap:.2f} pp > {thresholds.tflite_vs_keras_pp} pp")
    # The compression target is the QAT deployment's; selective PTQ's file is reported beside it.
    whole = (record["order"] in ("last", "first") and record["n"] == record["units_total"]
             and record.get("method", "qat") == "qat")
    min_ratio = thresholds.compression_bound(bits)
    if whole and min_ratio is not None:
        ratio = record["control_tflite_bytes"] / record["tflite_bytes"]
        if ratio < min_ratio:
            found.append(f"whole-model W{bits} .tflite only {ratio:.2f}x smaller than float (need {min_ratio}x)")
    # Weights, not the file: a tiny unit (the cnn's 288-weight first conv) saves fewer bytes than
    # its per-channel scales and QUANTIZE op add, so its file may grow (size_not_decreasing's note).
    if record["n"] and record["order"] != "type" and record["weight_bytes"] >= record["control_weight_bytes"]:
        found.append(f"quantizing {record['n']} units did not shrink the weights "
                     f"({record['weight_bytes']} B vs float {record['control_weight_bytes']} B)")
    return found


def size_not_decreasing(records: Iterable[dict], field: str = "weight_bytes") -> list:
    """Series (model, order, bits, method, seed) of 'last'/'first' records whose ``field`` is not
    strictly decreasing in N. One line per offending pair.

    Weight bytes must fall with every unit quantized. The file size need not: quantizing a tiny
    unit (a 288-weight first conv) saves less than its per-channel scales, zero points and the
    extra QUANTIZE op add, so ``tflite_bytes`` is reported, not failed."""
    series = defaultdict(list)
    for r in records:
        if r.get("status") in ("passed", "failed") and r.get("order") in ("last", "first"):
            key = (r["model"], r["order"], r["weight_bits"], r["method"], r["seed"], r.get("tier"))
            series[key].append((r["n"], r[field], r["case_id"]))
    problems = []
    for key, points in series.items():
        points.sort()
        for (n0, b0, id0), (n1, b1, id1) in zip(points, points[1:]):
            if not b1 < b0:
                problems.append(f"{field} not decreasing in N: {id0} {b0} B -> {id1} {b1} B")
    return problems
