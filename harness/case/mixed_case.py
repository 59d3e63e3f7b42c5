"""Sensitivity scores of a pre-trained model, cached per process, and the ``mixed`` case's plan (issue 17).

The scores (harness/case/sensitivity.py: HAWQ-V2, Hutchinson trace times quantization noise power)
come from the pre-trained float model, before any fine-tuning, so every case of one pre-trained
model shares them: the ``sensitivity`` order at its bit width, the ``mixed`` order at MIXED_BITS.
A few hundred training examples and a modest probe count keep it to seconds; the seed fixes the
probes, so a case's selection does not depend on which case of the model ran first. The probes do
not depend on the bit widths either: scores computed for (8, 4) together equal those for 8 alone.

A ``mixed`` case solves harness.design.mixed.mixed_plan over float/INT8/INT4 per unit within its
budget (Selection.n bytes of weights), among deployable plans only (``chain=True``: no lone float unit
between quantized ones, which the converter would store as INT8; the record's ``uniform_kinds``: every quantized conv
unit at one width, the scheme's, since a conv with a width of its own loses tfmot's Conv+BN folding),
and records the plan (``mixed_plan``), which the audit checks
kernel by kernel (harness/results/gates.py) and whose bytes size.py's formula gives exactly.
"""

from __future__ import annotations

import time
from typing import Sequence

from harness.case.sensitivity import costs_by_bits, unit_scores
from harness.design import mixed
from harness.design.config import ENDS_BITS, MIXED_BITS, Case
from harness.design.size import SizePrediction

EXAMPLES = 256
PROBES = 16
SEED = 0
_CACHE: dict = {}  # (pre-trained key, bits, per_channel) -> (UnitScore tuple, seconds)


def scores(base, units, data, bits_list: Sequence[int], per_channel) -> tuple:
    """(UnitScore tuple with a score at every width of ``bits_list``, seconds of the computation, cached)."""
    keys = [(base.key, b, per_channel) for b in bits_list]
    covering = [_CACHE[k] for k in keys if k in _CACHE and all(b in _CACHE[k][0][0].score for b in bits_list)]
    if covering:
        found, seconds = covering[0]
        return found, seconds, True
    start = time.perf_counter()
    sample = (data.x_train[:EXAMPLES], data.y_train[:EXAMPLES])
    found = unit_scores(base.model, units, sample, tuple(bits_list), samples=PROBES, seed=SEED,
                        per_channel=per_channel)
    seconds = time.perf_counter() - start
    for key in keys:
        _CACHE[key] = (found, seconds)
    return found, seconds, False


def provenance(base, data, seconds: float, cached: bool) -> dict:
    """Where the scores came from, for the record."""
    return {"method": "hutchinson", "examples": min(EXAMPLES, len(data.x_train)), "probes": PROBES, "seed": SEED,
            "seconds": seconds, "cached": cached, "pretrained_key": base.key}


def sensitivity_field(case: Case, base, units, data) -> tuple:
    """(costs per unit, record field) of a ``sensitivity`` case at its bit width."""
    bits = case.quant.weight_bits
    found, seconds, cached = scores(base, units, data, (bits,), case.quant.per_channel)
    field = {"bits": bits, **provenance(base, data, seconds, cached),
             "units": [{"index": s.index, "weight_layer": s.weight_layer, "trace": s.trace,
                        "trace_stderr": s.trace_stderr, "noise": s.noise[bits], "score": s.score[bits]}
                       for s in found]}
    return costs_by_bits(found)[bits], field


def plan(case: Case, base, units, data) -> tuple:
    """(MixedPlan, {unit index: bits} of the quantized units, ``mixed_plan`` record field)."""
    found, seconds, cached = scores(base, units, data, MIXED_BITS, case.quant.per_channel)
    costs = costs_by_bits(found)
    # conv units cannot take a width of their own (harness/case/quantize.py): the plan ties their width
    chosen = mixed.deployable_plan(units, {b: costs[b] for b in MIXED_BITS}, case.selection.n)
    bits_of = {u.index: c for u, c in zip(units, chosen.choices) if c != mixed.FLOAT}
    rows = []
    for unit, choice, s in zip(units, chosen.choices, found):
        rows.append({"index": unit.index, "weight_layer": unit.weight_layer, "choice": choice,
                     "bytes": mixed.unit_bytes(unit, choice),
                     "cost": 0.0 if choice == mixed.FLOAT else costs[choice][unit.index],
                     "trace": s.trace, "trace_stderr": s.trace_stderr,
                     "noise": {str(b): s.noise[b] for b in MIXED_BITS},
                     "score": {str(b): s.score[b] for b in MIXED_BITS}})
    field = {"budget_bytes": chosen.budget_bytes, "widths": list(MIXED_BITS), "tag": chosen.tag, "chain": True,
             "uniform_kinds": list(mixed.tied_kinds_of(units)),
             "predicted_cost": chosen.predicted_cost, "predicted_bytes": chosen.weight_bytes,
             "float_bytes": mixed.plan_bytes(units, [mixed.FLOAT] * len(units)),
             "units": rows, "scores": provenance(base, data, seconds, cached)}
    return chosen, bits_of, field


def ends(units) -> tuple:
    """(MixedPlan, {unit index: bits}, ``mixed_plan`` record field) of an ``ends8`` case: the first and last
    unit at ENDS_BITS[0], the rest at ENDS_BITS[1] (harness.design.mixed.ends_plan). No scores are computed;
    the field has the mixed case's per-unit rows, so the audit checks it kernel by kernel the same way."""
    chosen = mixed.ends_plan(units, *ENDS_BITS)
    bits_of = {u.index: c for u, c in zip(units, chosen.choices)}
    rows = [{"index": u.index, "weight_layer": u.weight_layer, "choice": c, "bytes": mixed.unit_bytes(u, c)}
            for u, c in zip(units, chosen.choices)]
    field = {"plan": "ends8", "budget_bytes": chosen.budget_bytes, "widths": list(ENDS_BITS), "tag": chosen.tag,
             "predicted_bytes": chosen.weight_bytes,
             "float_bytes": mixed.plan_bytes(units, [mixed.FLOAT] * len(units)), "units": rows}
    return chosen, bits_of, field


def size_prediction(units, chosen: mixed.MixedPlan) -> SizePrediction:
    """size.py's formula over the plan's per-unit widths (what size.predict is for one width)."""
    stored = mixed.plan_bytes(units, chosen.choices)
    kernels = sum(u.kernels for u, c in zip(units, chosen.choices) if c != mixed.FLOAT)
    return SizePrediction(stored, stored, mixed.plan_bytes(units, [mixed.FLOAT] * len(units)), kernels)
