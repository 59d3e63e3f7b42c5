"""Planner: the most layers one can quantize within an accuracy (and size) budget. Pure.

For one group (model, order, weight_bits, method) the answer is the largest N in 1..N_max whose
upper 95% *prediction* bound of the accuracy drop (``fit.predict``, interval="prediction": the
drop one new run may show, not just the mean curve) is <= the budget. N_max is the largest
measured N (the fit is not extrapolated) unless ``extrapolate=True``, which allows N up to
units_total.

Size budget: compared with the whole .tflite file size (``tflite_bytes``), median over seeds at
each measured N and linearly interpolated in N between measured N. An N whose size cannot be
interpolated (outside the measured sizes) is not accepted when a size budget is given.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from . import fit as _fit


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


def size_table(records: Iterable[dict]) -> tuple:
    """((n, median tflite_bytes), ...) sorted by n, from records with a measured size."""
    seen = defaultdict(list)
    for record in records:
        size = _fit.as_number(record.get("tflite_bytes"))
        if record.get("n") is not None and size is not None:
            seen[int(record["n"])].append(size)
    return tuple(sorted((n, float(np.median(v))) for n, v in seen.items()))


bytes_at = _fit.interpolate  # tflite bytes at N from size_table(): None outside the measured N


def plan_group(group: _fit.GroupFit, budget_pp: float, *, size_budget: Optional[float] = None,
               sizes: Sequence = (), extrapolate: bool = False) -> Plan:
    """Largest N of one fitted group within the budgets (see module docstring)."""
    budget_pp, size_budget = check_budget(budget_pp, size_budget)
    base = dict(model=group.model, order=group.order, weight_bits=group.weight_bits, method=group.method,
                budget_pp=budget_pp, size_budget_bytes=None if size_budget is None else int(size_budget),
                units_total=group.units_total)
    empty = dict(n=None, predicted_drop_pp=None, upper95_pp=None, predicted_bytes=None)
    if not group.fitted:
        return Plan(**base, **empty, form=None, formula=None, reason=f"no fit ({group.reason})")
    measured_max = max(group.n_values)
    n_max = (group.units_total or measured_max) if extrapolate else measured_max
    if group.units_total:
        n_max = min(n_max, group.units_total)
    rejected = {"accuracy": 0, "size": 0}
    for n in range(n_max, 0, -1):
        pred = _fit.predict(group, n)
        if pred is None or not pred.upper95 <= budget_pp:
            rejected["accuracy"] += 1
            continue
        size = bytes_at(sizes, n)
        if size_budget is not None and (size is None or size > size_budget):
            rejected["size"] += 1
            continue
        why = [f"N={n}: upper 95% drop {pred.upper95:.3g} pp <= {budget_pp:g} pp"]
        if size_budget is not None:
            why.append(f"size {size:,.0f} B <= {size_budget:,.0f} B")
        if n == measured_max and not extrapolate and group.units_total and n < group.units_total:
            why.append(f"capped at the largest measured N (units_total {group.units_total})")
        elif n > measured_max:
            why.append(f"extrapolated beyond measured N<={measured_max}")
        if pred.note:
            why.append(pred.note)
        best = next(c for c in group.candidates if c.form == pred.form)
        return Plan(**base, n=n, predicted_drop_pp=pred.drop_pp, upper95_pp=pred.upper95, predicted_bytes=size,
                    form=pred.form, formula=best.formula, reason="; ".join(why))
    reason = f"no N in 1..{n_max} fits: {rejected['accuracy']} over the accuracy budget"
    if size_budget is not None:
        reason += f", {rejected['size']} over (or without) the size budget"
    return Plan(**base, **empty, form=group.best.form, formula=group.best.formula, reason=reason)


def plan_table(records: Iterable[dict], budget_pp: float, *, size_budget: Optional[float] = None,
               model: Optional[str] = None, orders: Sequence[str] = ("last",), method: Optional[str] = None,
               extrapolate: bool = False) -> tuple:
    """One Plan per (model, order, weight_bits, method) group: the plan across bit widths."""
    budget_pp, size_budget = check_budget(budget_pp, size_budget)
    chosen = [r for r in records if (model is None or r.get("model") == model)
              and (method is None or (r.get("method") or "qat") == method)]
    plans = []
    for group in _fit.group_records(chosen, orders).values():
        fitted = _fit.fit_group(group)
        plans.append(plan_group(fitted, budget_pp, size_budget=size_budget, sizes=size_table(group),
                                extrapolate=extrapolate))
    return tuple(plans)


def format_plans(plans: Sequence[Plan]) -> list:
    """Plain-text table lines."""
    header = ("model", "order", "bits", "method", "N", "of", "drop", "upper95", "bytes", "reason")
    rows = [header]
    for p in plans:
        rows.append((
            str(p.model), str(p.order), str(p.weight_bits), str(p.method),
            "-" if p.n is None else str(p.n), "?" if p.units_total is None else str(p.units_total),
            "-" if p.predicted_drop_pp is None else f"{p.predicted_drop_pp:.2f}",
            "-" if p.upper95_pp is None else f"{p.upper95_pp:.2f}",
            "-" if p.predicted_bytes is None else f"{p.predicted_bytes:,.0f}",
            p.reason,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
