"""Which units a Selection picks. Pure."""

from __future__ import annotations

from typing import Sequence

from harness.spec.config import Selection
from harness.spec.units import Unit, unit_kinds


def select(units: Sequence[Unit], selection: Selection) -> tuple:
    """Return the selected units, in graph order. Bad arguments raise a ValueError naming the range."""
    total = len(units)
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
    if selection.order == "last":
        return tuple(units[total - n:]) if n else ()
    return tuple(units[:n])

