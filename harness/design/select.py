"""Which units a Selection picks. Pure."""

from __future__ import annotations

from typing import Optional, Sequence

from harness.design.config import INNER_ORDERS, Selection
from harness.design.mixed import sensitivity_selection
from harness.design.units import Unit, unit_kinds


def select(units: Sequence[Unit], selection: Selection, costs: Optional[Sequence[float]] = None,
           bits: Optional[int] = None) -> tuple:
    """Return the selected units, in graph order. Bad arguments raise a ValueError naming the range.

    The ``sensitivity`` order also needs ``costs`` (the predicted cost of quantizing each unit, graph
    order, e.g. from harness.case.sensitivity.unit_scores) and the weight ``bits`` they are for (bytes
    saved depend on it). They are arguments, not computed here, so that select stays pure; every other
    order ignores them. The sensitivity order picks among the N-sets the converter deploys as selected
    (harness.design.mixed.sensitivity_selection with ``chain=True``: no lone float unit between quantized ones)."""
    total = len(units)
    if selection.order == "mixed":
        raise ValueError("order 'mixed' is a bit width per unit, not a selection: solve it with "
                         "harness.design.mixed.mixed_plan (harness/case/mixed_case.py does)")
    if selection.order == "ends8":
        raise ValueError("order 'ends8' is a bit width per unit, not a selection: harness.design.mixed.ends_plan "
                         "gives it (harness/case/mixed_case.py does)")
    if selection.order in INNER_ORDERS:
        return inner_selection(units, selection.order, selection.n)
    if selection.order == "type":
        kinds = unit_kinds(units)
        if selection.kind not in kinds:
            raise ValueError(f"unknown unit kind {selection.kind!r}; this model has: {', '.join(kinds)}")
        return tuple(u for u in units if u.kind == selection.kind)
    n = selection.n
    if selection.order == "single":
        if not 0 <= n < total:
            raise ValueError(f"single unit index must be in 0..{total - 1}, got {n}")
        return (units[n],)
    if not 0 <= n <= total:
        raise ValueError(f"N must be in 0..{total} for a model with {total} units, got {n}")
    if selection.order == "sensitivity":
        if costs is None or bits is None:
            raise ValueError("order 'sensitivity' needs a predicted cost per unit and the bit width they are "
                             "for: select(units, selection, costs=[...], bits=8); compute them with "
                             "harness.case.sensitivity.unit_scores (harness/case/pipeline.py does)")
        return sensitivity_selection(units, costs, n, bits, chain=True)  # only selections that deploy as selected
    if selection.order == "last":
        return tuple(units[total - n:]) if n else ()
    return tuple(units[:n])


def inner_selection(units: Sequence[Unit], order: str, n: int) -> tuple:
    """``last-inner``/``first-inner``: the last or first ``n`` of the inner units (every unit but the first
    and the last, which stay float on both sides), in graph order. n in 0..L-2; at n = L-2 both orders
    select every inner unit, at n = 0 none."""
    inner = tuple(units[1:-1])
    if not 0 <= n <= len(inner):
        raise ValueError(f"N must be in 0..{len(inner)} for order {order!r} on a model with {len(units)} units "
                         f"(its {len(inner)} inner units; the first and last are held out), got {n}")
    if order == "last-inner":
        return inner[len(inner) - n:] if n else ()
    if order == "first-inner":
        return inner[:n]
    raise ValueError(f"inner order must be one of {', '.join(INNER_ORDERS)}, got {order!r}")
