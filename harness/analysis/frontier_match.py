"""Matched-bytes helpers of the frontier: the interpolation, which matched points compare a selection
with the very same units as last-N (or as a mixed plan), and a point's bytes per seed. Pure.

A sensitivity-N (or mixed) case of a seed that quantizes exactly the units last-N quantizes, at the
same bytes, is the same model: its difference from last-N is 0 by construction ("+0.00 [+0.00,
+0.00]") and only dilutes the comparison's mean (in results/reference, 13 of 40 matched points: every
point of cnn's seed 0 and N = 4 in every seed). Such pairs are excluded and counted
(``Matched.identical``).
"""

from __future__ import annotations

from collections import defaultdict
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
    measured records that list their units (bits None for the mixed and ends8 plans, as the frontier's point keys)."""
    out: dict = {}
    for r in records:
        units, size = r.get("units_selected"), seedstats.as_number(r.get("weight_bytes"))
        if seedstats.drop_of(r) is None or not isinstance(units, list) or size is None or r.get("n") is None:
            continue
        bits = None if r.get("order") in ("mixed", "ends8") else r.get("weight_bits")
        key = (r.get("model"), r.get("method") or "qat", r.get("order"), bits, int(r["n"]), r.get("seed"))
        out.setdefault(key, set()).add((frozenset(units), size))
    return out


def same_as_last(table: dict, point, seed, last_bits) -> bool:
    """Does this seed's run of ``point`` quantize exactly the units of one of that seed's last-N runs at
    ``last_bits``, at the same weight bytes (so the same widths too)?"""
    return same_as(table, point, seed, "last", last_bits)


def same_as(table: dict, point, seed, order: str, bits) -> bool:
    """Does this seed's run of ``point`` have the units and weight bytes of one of that seed's runs of
    ``order`` at ``bits`` (None for the mixed plans): the same model, so a difference of 0?"""
    mine = table.get((point.model, point.method, point.selection, point.bits, point.n, seed))
    if not mine:
        return False
    other = set().union(*(v for (mo, me, o, b, _, s), v in table.items()
                          if (mo, me, o, b, s) == (point.model, point.method, order, bits, seed)))
    return bool(mine & other)


def by_seed(pairs) -> list:
    """[(seed, [values]), ...] sorted by seed, from (seed, value) pairs."""
    out = defaultdict(list)
    for seed, value in pairs:
        out[seed].append(value)
    return sorted(out.items(), key=lambda kv: str(kv[0]))


def _sizes_text(sizes) -> str:
    return ", ".join(f"{b:,}" for b in sorted(sizes))


def bytes_problem(per_seed_bytes: bool, seed_sizes: list) -> str:
    """Why a frontier point has no x (frontier's module docstring); "" when it has one. ``per_seed_bytes``:
    its seeds may differ (each has its own model), only repeated runs of one seed may not."""
    every = {b for _, sizes in seed_sizes for b in sizes}
    if not every:
        return "no weight_bytes in its records"
    if not per_seed_bytes and len(every) > 1:
        return f"seeds disagree on weight bytes ({_sizes_text(every)}): not averaged"
    for seed, sizes in seed_sizes:
        if len(set(sizes)) > 1:
            return f"runs of seed {seed} disagree on weight bytes ({_sizes_text(set(sizes))}): not averaged"
    return ""
