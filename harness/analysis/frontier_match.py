"""Matched-bytes helpers of the frontier: the interpolation, and which matched points compare a
selection with the very same units as last-N. Pure.

A sensitivity-N (or mixed) case of a seed that quantizes exactly the units last-N quantizes, at the
same bytes, is the same model: its difference from last-N is 0 by construction ("+0.00 [+0.00,
+0.00]") and only dilutes the comparison's mean (in results/reference, 13 of 40 matched points: every
point of cnn's seed 0 and N = 4 in every seed). Such pairs are excluded and counted
(``Matched.identical``).
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from harness.results import seedstats


def interpolate(xs, ys, x: float) -> Optional[float]:
    """y at x on the piecewise-linear curve through (xs, ys) (any order; equal xs averaged); None
    outside [min xs, max xs]: never extrapolated."""
    if len(xs) == 0:
        return None
    unique, inverse = np.unique(np.asarray(xs, float), return_inverse=True)
    sums = np.bincount(inverse, weights=np.asarray(ys, float))
    means = sums / np.bincount(inverse)
    if not unique[0] <= x <= unique[-1]:
        return None
    return float(np.interp(x, unique, means))


def unit_sets(records: Iterable[dict]) -> dict:
    """{(model, method, order, bits, n, seed): {(frozenset of units_selected, weight_bytes), ...}} of the
    measured records that list their units (bits None for mixed, as the frontier's point keys)."""
    out: dict = {}
    for r in records:
        units, size = r.get("units_selected"), seedstats.as_number(r.get("weight_bytes"))
        if seedstats.drop_of(r) is None or not isinstance(units, list) or size is None or r.get("n") is None:
            continue
        bits = None if r.get("order") == "mixed" else r.get("weight_bits")
        key = (r.get("model"), r.get("method") or "qat", r.get("order"), bits, int(r["n"]), r.get("seed"))
        out.setdefault(key, set()).add((frozenset(units), size))
    return out


def same_as_last(table: dict, point, seed, last_bits) -> bool:
    """Does this seed's run of ``point`` quantize exactly the units of one of that seed's last-N runs at
    ``last_bits``, at the same weight bytes (so the same widths too)?"""
    mine = table.get((point.model, point.method, point.selection, point.bits, point.n, seed))
    if not mine:
        return False
    last = set().union(*(v for (mo, me, order, bits, _, s), v in table.items()
                         if (mo, me, order, bits, s) == (point.model, point.method, "last", last_bits, seed)))
    return bool(mine & last)
