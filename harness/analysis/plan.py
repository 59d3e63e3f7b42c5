"""Planner: the most layers one can quantize within an accuracy (and size) budget. Pure.

For one group (model, order, weight_bits, method) the answer is the largest N in 1..N_max whose
upper 95% *prediction* bound of the accuracy drop (``fit.predict``, interval="prediction": the
drop one new run may show, seed-to-seed spread included, not just the mean curve) is <= the
budget. N_max is the largest measured N (the fit is not extrapolated) unless
``extrapolate=True``, which allows N up to units_total.

Divergence: a run whose loss went NaN (status "nan") is a failure of its N, not a missing point.
An N with any diverged run is not recommended, whatever its fit says; an N without runs of its
own inherits the divergences of the nearest measured N below and above it (nothing shows it is
safer than its neighbours). The reason names the skipped N and their divergence counts.

Size budget: compared with the predicted .tflite file size at N = the exact weight bytes from
the records' ``unit_table`` (``size.predict`` over ``select(order, N)`` at the group's bit width)
+ the overhead bytes (file minus weights: graph, tensor names, quantization tables) of the
nearest measured N, median over seeds (on a tie the larger N, whose tables are not smaller).
Records without a unit_table (schema 1) fall back to the whole-file bytes interpolated linearly
between measured N, and the reason says so; an N outside the measured sizes is then not accepted.

Latency budget (a ratio, quantized/control at batch 1 in LiteRT: harness/case/latency.py): an N is
accepted when every timed run of that N has its upper 95% bound within it (latency_report.upper_bounds).
Latency is not fitted nor interpolated (it need not be monotone in N: QUANTIZE/DEQUANTIZE crossings
cost most at small N), so an N without a timed run is not accepted, and the ratio holds for the
machine kind that measured it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from harness.analysis import drop_fit as _fit
from harness.analysis import latency_report
from harness.design.config import QuantConfig, Selection
from harness.design.select import select
from harness.design.size import predict as predict_size

RUN_STATUSES = ("passed", "failed", "nan")  # runs that trained to the end or diverged


@dataclass(frozen=True)
class Plan:
    model: str
    order: str
    weight_bits: int
    method: str
    budget_pp: float
    size_budget_bytes: Optional[int]
    n: Optional[int]  # the answer; None when no N fits
    units_total: Optional[int]
    predicted_drop_pp: Optional[float]
    upper95_pp: Optional[float]
    predicted_bytes: Optional[float]
    form: Optional[str]
    formula: Optional[str]
    reason: str
    predicted_fraction: Optional[float] = None
    size_source: str = ""
    latency_budget: Optional[float] = None
    latency_upper: Optional[float] = None  # at the answer: the highest upper 95% bound of its timed runs

    @property
    def ok(self) -> bool:
        return self.n is not None


def check_budget(budget_pp, size_budget=None) -> tuple:
    """Validated (budget_pp, size_budget); ValueError for a negative/non-finite budget."""
    try:
        budget = float(budget_pp)
    except (TypeError, ValueError):
        raise ValueError(f"accuracy budget must be a number of percentage points, got {budget_pp!r}") from None
    if not math.isfinite(budget) or budget < 0:
        raise ValueError(f"accuracy budget must be >= 0 percentage points, got {budget_pp!r}")
    if size_budget is not None:
        try:
            size = float(size_budget)
        except (TypeError, ValueError):
            raise ValueError(f"size budget must be a number of bytes, got {size_budget!r}") from None
        if not math.isfinite(size) or size <= 0:
            raise ValueError(f"size budget must be > 0 bytes, got {size_budget!r}")
        size_budget = size
    return budget, size_budget


def size_table(records: Iterable[dict], field: str = "tflite_bytes") -> tuple:
    """((n, median of ``field``), ...) sorted by n, from records with that value."""
    seen = defaultdict(list)
    for record in records:
        size = _fit.as_number(record.get(field))
        if record.get("n") is not None and size is not None:
            seen[int(record["n"])].append(size)
    return tuple(sorted((n, float(np.median(v))) for n, v in seen.items()))


bytes_at = _fit.interpolate  # tflite bytes at N from size_table(): None outside the measured N


def _overhead(record: dict) -> Optional[float]:
    value = _fit.as_number(record.get("overhead_bytes"))
    if value is None:
        whole, weights = _fit.as_number(record.get("tflite_bytes")), _fit.as_number(record.get("weight_bytes"))
        value = None if whole is None or weights is None else whole - weights
    return value


@dataclass(frozen=True)
class SizeModel:
    """Predicted .tflite bytes at any N of one group (see the module docstring)."""

    order: str
    weight_bits: int
    units: Optional[tuple]  # from the unit table; None for old records
    overhead: tuple  # ((n, median overhead bytes), ...)
    measured: tuple  # ((n, median tflite bytes), ...): the fallback

    @property
    def exact(self) -> bool:
        return self.units is not None and bool(self.overhead)

    @property
    def source(self) -> str:
        if self.exact:
            return "size = exact weight bytes + overhead of the nearest measured N"
        return "size interpolated between measured N (records have no unit_table)"

    def weight_bytes(self, n: int) -> Optional[int]:
        if self.units is None or not 0 <= n <= len(self.units):
            return None
        return predict_size(self.units, select(self.units, Selection(self.order, int(n))),
                            QuantConfig(weight_bits=int(self.weight_bits))).weight_bytes

    def file_bytes(self, n: int) -> Optional[float]:
        if not self.exact:
            return bytes_at(self.measured, n)
        weights = self.weight_bytes(n)
        if weights is None:
            return None
        nearest = min(self.overhead, key=lambda p: (abs(p[0] - n), -p[0]))
        return float(weights + nearest[1])


def size_model(records: Sequence[dict], order: str, weight_bits) -> SizeModel:
    overheads = defaultdict(list)
    for r in records:
        v = _overhead(r)
        if r.get("n") is not None and v is not None:
            overheads[int(r["n"])].append(v)
    units = _fit.units_from_records(records) if order in ("first", "last") else None
    try:
        QuantConfig(weight_bits=weight_bits)
    except (ValueError, TypeError):
        units = None
    return SizeModel(order, weight_bits, units, tuple(sorted((n, float(np.median(v))) for n, v in overheads.items())),
                     size_table(records))


def divergence(records: Iterable[dict]) -> dict:
    """{n: (diverged runs, runs)} over runs that trained to the end or diverged."""
    table = defaultdict(lambda: [0, 0])
    for r in records:
        if r.get("n") is not None and r.get("status") in RUN_STATUSES:
            table[int(r["n"])][1] += 1
            table[int(r["n"])][0] += r["status"] == "nan"
    return {n: tuple(v) for n, v in sorted(table.items())}


def diverged_reason(table: dict, n: int) -> Optional[str]:
    """Why N is not recommended for divergence, or None."""
    if n in table:
        bad, runs = table[n]
        return f"N={n}: {bad} of {runs} runs diverged" if bad else None
    below = [k for k in table if k < n]
    above = [k for k in table if k > n]
    near = [k for k in (max(below) if below else None, min(above) if above else None) if k is not None]
    bad = [f"N={k}: {table[k][0]} of {table[k][1]}" for k in near if table[k][0]]
    return f"N={n} unmeasured, next to diverged runs ({', '.join(bad)})" if bad else None


def check_latency_budget(ratio) -> Optional[float]:
    """A latency budget: a ratio quantized/control > 0 (1.0: no slower than float), or None."""
    if ratio is None:
        return None
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio <= 0:
        raise ValueError(f"latency budget must be a ratio quantized/control > 0 (e.g. 1.0), got {ratio!r}")
    return float(ratio)


def _accepted(group: _fit.GroupFit, n: int, budget_pp: float, size_budget: Optional[float], sizes: SizeModel,
              diverged: dict, rejected: dict, latency: tuple = (None, {})) -> Optional[tuple]:
    """(prediction, bytes) when N is within every budget; else None, counting the reason. ``latency``:
    (budget ratio or None, {N: upper bound of the timed runs})."""
    why_not = diverged_reason(diverged, n)
    if why_not:
        rejected["diverged"].append(why_not)
        return None
    if latency[0] is not None and not latency[1].get(n, math.inf) <= latency[0]:
        rejected["latency"] += 1
        return None
    pred = _fit.predict(group, n)
    if pred is None or not pred.upper95 <= budget_pp:
        rejected["accuracy"] += 1
        return None
    size = sizes.file_bytes(n)
    if size_budget is not None and (size is None or size > size_budget):
        rejected["size"] += 1
        return None
    return pred, size


def plan_group(group: _fit.GroupFit, budget_pp: float, *, records: Sequence[dict] = (),
               size_budget: Optional[float] = None, extrapolate: bool = False,
               latency_budget: Optional[float] = None) -> Plan:
    """Largest N of one fitted group within the budgets; ``records``: the group's runs, any status."""
    budget_pp, size_budget = check_budget(budget_pp, size_budget)
    latency = (check_latency_budget(latency_budget), latency_report.upper_bounds(records))
    sizes = size_model(records, group.order, group.weight_bits)
    base = dict(model=group.model, order=group.order, weight_bits=group.weight_bits, method=group.method,
                budget_pp=budget_pp, size_budget_bytes=None if size_budget is None else int(size_budget),
                units_total=group.units_total, size_source=sizes.source if size_budget is not None else "",
                latency_budget=latency[0])
    empty = dict(n=None, predicted_drop_pp=None, upper95_pp=None, predicted_bytes=None)
    if not group.fitted:
        return Plan(**base, **empty, form=None, formula=None, reason=f"no fit ({group.reason})")
    measured_max = max(group.n_values)
    n_max = (group.units_total or measured_max) if extrapolate else measured_max
    if group.units_total:
        n_max = min(n_max, group.units_total)
    rejected, diverged = {"accuracy": 0, "size": 0, "latency": 0, "diverged": []}, divergence(records)
    for n in range(n_max, 0, -1):
        found = _accepted(group, n, budget_pp, size_budget, sizes, diverged, rejected, latency)
        if found is None:
            continue
        pred, size = found
        why = [f"N={n}: upper 95% drop {pred.upper95:.3g} pp <= {budget_pp:g} pp"]
        if size_budget is not None:
            why.append(f"size {size:,.0f} B <= {size_budget:,.0f} B ({sizes.source})")
        if latency[0] is not None:
            why.append(f"latency ratio upper 95% {latency[1][n]:.2f} <= {latency[0]:g} (on the CPU that measured it)")
        if n == measured_max and not extrapolate and group.units_total and n < group.units_total:
            why.append(f"capped at the largest measured N (units_total {group.units_total})")
        elif n > measured_max:
            why.append(f"extrapolated beyond measured N<={measured_max}")
        why += [f"not recommended: {r}" for r in rejected["diverged"]] + ([pred.note] if pred.note else [])
        best = next(c for c in group.candidates + group.flat if c.form == pred.form)  # flat: no trend
        return Plan(**base, n=n, predicted_drop_pp=pred.drop_pp, upper95_pp=pred.upper95, predicted_bytes=size,
                    form=pred.form, formula=best.formula, reason="; ".join(why),
                    predicted_fraction=_fit.fraction_at(group.fractions, n),
                    latency_upper=latency[1].get(n) if latency[0] is not None else None)
    reason = f"no N in 1..{n_max} fits: {rejected['accuracy']} over the accuracy budget"
    if size_budget is not None:
        reason += f", {rejected['size']} over (or without) the size budget ({sizes.source})"
    if latency[0] is not None:
        reason += f", {rejected['latency']} over (or not timed for) the latency budget {latency[0]:g}"
    if rejected["diverged"]:
        reason += f", {len(rejected['diverged'])} not recommended ({'; '.join(rejected['diverged'])})"
    return Plan(**base, **empty, form=group.best.form, formula=group.best.formula, reason=reason)


def plan_table(records: Iterable[dict], budget_pp: float, *, size_budget: Optional[float] = None,
               model: Optional[str] = None, orders: Sequence[str] = ("last",), method: Optional[str] = None,
               extrapolate: bool = False, latency_budget: Optional[float] = None) -> tuple:
    """One Plan per (model, order, weight_bits, method) group: the plan across bit widths."""
    budget_pp, size_budget = check_budget(budget_pp, size_budget)
    latency_budget = check_latency_budget(latency_budget)
    chosen = [r for r in records if (model is None or r.get("model") == model)
              and (method is None or (r.get("method") or "qat") == method)]
    plans = []
    for group in _fit.group_records(chosen, orders).values():
        plans.append(plan_group(_fit.fit_group(group), budget_pp, records=group, size_budget=size_budget,
                                extrapolate=extrapolate, latency_budget=latency_budget))
    return tuple(plans)


def format_plans(plans: Sequence[Plan]) -> list:
    """Plain-text table lines."""
    header = ("model", "order", "bits", "method", "N", "of", "frac", "drop", "upper95", "bytes", "reason")
    rows = [header]
    for p in plans:
        rows.append((
            str(p.model), str(p.order), str(p.weight_bits), str(p.method),
            "-" if p.n is None else str(p.n), "?" if p.units_total is None else str(p.units_total),
            "-" if p.predicted_fraction is None else f"{p.predicted_fraction:.3f}",
            "-" if p.predicted_drop_pp is None else f"{p.predicted_drop_pp:.2f}",
            "-" if p.upper95_pp is None else f"{p.upper95_pp:.2f}",
            "-" if p.predicted_bytes is None else f"{p.predicted_bytes:,.0f}",
            p.reason,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]


@dataclass(frozen=True)
class SizeCheck:
    model: str
    order: str
    weight_bits: int
    method: str
    n_records: int
    max_rel_error: Optional[float]
    worst_case_id: Optional[str]
    tolerance: float
    ok: bool


def size_check(records: Iterable[dict], tolerance: float = 0.01) -> tuple:
    """Max |predicted_weight_bytes - weight_bytes| / weight_bytes per group."""
    out = []
    for key, group in _fit.group_records(records).items():
        errors = []
        for r in group:
            measured, predicted = _fit.as_number(r.get("weight_bytes")), _fit.as_number(r.get("predicted_weight_bytes"))
            if measured and predicted is not None:
                errors.append((abs(predicted - measured) / measured, r.get("case_id")))
        worst = max(errors, key=lambda e: e[0]) if errors else (None, None)
        out.append(SizeCheck(*key, n_records=len(errors), max_rel_error=worst[0], worst_case_id=worst[1],
                             tolerance=tolerance, ok=worst[0] is None or worst[0] <= tolerance))
    return tuple(out)
