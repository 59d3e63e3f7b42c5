"""The thresholds a record must meet, from its model's spec. Pure: returns violations, asserts nothing."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, Iterable

from harness.results.baseline import baseline_key
from harness.design.config import PLAN_ORDERS
from harness.design.thresholds import Thresholds
from harness.results.records import MEASURED
from harness.results.seedstats import mean_interval



QUANTIZED = ("INT8", "INT4", "UINT8", "INT2")


def _kernel_layer(name: str) -> str:
    """The Keras layer a .tflite kernel came from: "model/quant_pw/Conv2D;..." -> "pw"."""
    parts = name.split(";")[0].split("/")
    layer = parts[1] if len(parts) > 1 else parts[0]
    return layer[len("quant_"):] if layer.startswith("quant_") else layer


def _kernel_mismatch(record: dict) -> str:
    """Which layers the converter quantized without their being selected, or left float though
    selected, and what to do: the cut falls where the converter moves the quantization boundary."""
    kernels = (record.get("audit") or {}).get("kernels") or []
    quantized = {_kernel_layer(k["name"]) for k in kernels if k.get("dtype") in QUANTIZED}
    selected = set(record.get("selected_layers") or [])
    extra, missing = sorted(quantized - selected), sorted(selected - quantized)
    if not extra and not missing:
        return ""
    return (f"; quantized but not selected: {', '.join(extra) or '-'}; selected but float: {', '.join(missing) or '-'}"
            " (the cut falls where the converter moves the quantization boundary, e.g. behind a Concatenate or a "
            "Dropout: choose another N, or make those layers one QatBlock)")


def _storage_type(choice) -> str:
    """What a mixed plan's choice is stored as in the flatbuffer (harness.design.config.QuantConfig.storage_bits)."""
    if choice == "float":
        return "FLOAT32"
    return "INT8" if int(choice) >= 5 else "INT4"


def plan_mismatches(record: dict) -> list:
    """A ``mixed`` case: one line per planned unit whose kernels the .tflite stores otherwise than its plan
    says (INT8 for 8 bits, INT4 for 4, FLOAT32 for float), naming the layer; empty for other orders."""
    plan = record.get("mixed_plan")
    if not isinstance(plan, dict):
        return []
    stored = defaultdict(list)
    for kernel in (record.get("audit") or {}).get("kernels") or []:
        stored[_kernel_layer(kernel["name"])].append(kernel.get("dtype"))
    found = []
    for unit in plan.get("units") or []:
        layer, want = unit["weight_layer"], _storage_type(unit["choice"])
        got = sorted(set(stored.get(layer, ())))
        if not got:
            found.append(f"audit: layer {layer} (planned {want}) has no kernel in the .tflite")
        elif got != [want]:
            found.append(f"audit: layer {layer} stored as {'/'.join(got)}, the mixed plan says {want}")
    return found


CONTROL_FLOOR = "float control accuracy "  # how the control-floor violation begins (report.control_floor_lines)


def below_floor(records: Iterable[dict]) -> list:
    """(case id, violation) of each record whose float control broke its floor, from its recorded violations."""
    return [(r.get("case_id"), v) for r in records for v in r.get("violations") or []
            if isinstance(v, str) and v.startswith(CONTROL_FLOOR)]


def violations(record: dict, thresholds: Thresholds) -> list:
    """One line per broken threshold; empty when the case passes."""
    found = []
    bits = record["weight_bits"]
    control = record.get("control_accuracy")
    if control is not None and control < thresholds.min_control_accuracy:
        why = ("under-trained: its drops would measure training, not quantization" if thresholds.floor_source
               else "training collapsed: a drop against it means nothing")
        found.append(f"{CONTROL_FLOOR}{control:.4f} < {thresholds.floor_text()} ({why})")
    if record["quantized_kernels"] != record["selected_kernels"]:
        found.append(f"audit: {record['quantized_kernels']} quantized kernels in the .tflite, "
                     f"{record['selected_kernels']} selected ({record['audit']['kernel_dtypes']})"
                     + _kernel_mismatch(record))
    found += plan_mismatches(record)
    if record["size_error_rel"] > thresholds.size_tolerance:
        found.append(f"size: predicted {record['predicted_weight_bytes']} B vs measured {record['weight_bytes']} B "
                     f"({record['size_error_rel']:.2%} > {thresholds.size_tolerance:.0%})")
    # The accuracy-drop target is judged per configuration over its seeds (drop_targets), not here.
    if record["deployment"] != "simulated" and record.get("quant_accuracy_keras") is not None:
        # rounded: 5 of 1,000 examples is 0.5 pp, not 0.5000000000000004 pp above a 0.5 pp tolerance
        # both runtimes' argmax accuracies (each breaks a tie toward the lowest class index): the check is
        # that the file computes what the Keras model computes, whatever the tie-aware accuracy does
        tflite = record.get("quant_accuracy_deployed")
        tflite = record["quant_accuracy"] if tflite is None else tflite
        gap = round(abs(tflite - record["quant_accuracy_keras"]) * 100, 9)
        if gap > thresholds.tflite_vs_keras_pp:
            found.append(f"TFLite accuracy {tflite:.4f} differs from Keras "
                         f"{record['quant_accuracy_keras']:.4f} by {gap:.2f} pp > {thresholds.tflite_vs_keras_pp} pp "
                         "(argmax both)")
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
    # (a mixed plan's n is its budget, an ends8 plan's 0: each quantizes the units it selected)
    # (single's n is a unit index, not a count)
    by_units = record["order"] in PLAN_ORDERS + ("single",)
    quantizes = len(record.get("units_selected") or ()) if by_units else record["n"]
    if quantizes and record["order"] != "type" and record["weight_bytes"] >= record["control_weight_bytes"]:
        found.append(f"quantizing {quantizes} units did not shrink the weights "
                     f"({record['weight_bytes']} B vs float {record['control_weight_bytes']} B)")
    return found


def size_not_decreasing(records: Iterable[dict], field: str = "weight_bytes") -> list:
    """Series (model, order, bits, method, seed) of last/first (and last-inner/first-inner) records whose
    ``field`` is not strictly decreasing in N. One line per offending pair.

    Weight bytes must fall with every unit quantized. The file size need not: quantizing a tiny
    unit (a 288-weight first conv) saves less than its per-channel scales, zero points and the
    extra QUANTIZE op add, so ``tflite_bytes`` is reported, not failed."""
    series = defaultdict(list)
    for r in records:
        if r.get("status") in MEASURED and r.get("order") in ("last", "first", "last-inner", "first-inner"):
            key = (r["model"], r["order"], r["weight_bits"], r["method"], r["seed"], r.get("tier"))
            series[key].append((r["n"], r[field], r["case_id"]))
    problems = []
    for key, points in series.items():
        points.sort()
        for (n0, b0, id0), (n1, b1, id1) in zip(points, points[1:]):
            if not b1 < b0:
                problems.append(f"{field} not decreasing in N: {id0} {b0} B -> {id1} {b1} B")
    return problems


def drop_targets(records: Iterable[dict], thresholds_of: Callable[[str], Thresholds]) -> tuple:
    """(failures, inconclusive): the spec's maximum drop per bit width, judged on each configuration
    (a case without its seed) by the mean drop over its seeds and that mean's 95% interval (Student
    t over seeds; one seed: the case's paired interval). The target fails when the whole interval
    lies above it; an interval that straddles it is reported as inconclusive, not as a verdict
    either way: a single seed's drop on 1,000 test examples moves by about a point."""
    groups = defaultdict(list)
    for record in records:
        if record.get("status") in MEASURED and record.get("accuracy_drop_pp") is not None:
            groups[baseline_key(record)].append(record)
    failures, inconclusive = [], []
    for key in sorted(groups):
        group = groups[key]
        bound = thresholds_of(group[0]["model"]).drop_bound(group[0]["weight_bits"])
        if bound is None:
            continue
        mean, low, high = _mean_and_interval(group)
        where = (f"{key}: mean drop {mean:.2f} pp [{low:.2f}, {high:.2f}] over {len(group)} "
                 f"seed{'s' if len(group) != 1 else ''}, target {bound} pp at {group[0]['weight_bits']} bits")
        if low > bound:
            failures.append(f"target: {where}: above it")
        elif high > bound:
            inconclusive.append(f"target inconclusive: {where}: the interval contains it")
    return failures, inconclusive


def _mean_and_interval(group: list) -> tuple:
    drops = [r["accuracy_drop_pp"] for r in group]
    if len(drops) >= 2:
        return mean_interval(drops)
    interval = group[0].get("drop_ci95_pp") or [math.nan, math.nan]
    low, high = (v if v is not None else math.nan for v in interval)
    return drops[0], (drops[0] if math.isnan(low) else low), (drops[0] if math.isnan(high) else high)
