"""Does quantizing the final layers cost less accuracy than quantizing the first ones? Pure.

Per (model, weight_bits, method) with both 'last' and 'first' records: pair the two orders by
(n, seed) for 0 < n < units_total (at n = 0 and n = units_total both orders quantize the same
units), d = drop_first - drop_last, two-sided Wilcoxon signed-rank test (zeros dropped, the
"wilcox" convention). Effect sizes: the median of d (pp) and the matched-pairs rank-biserial
correlation r = (R+ - R-) / (R+ + R-) in [-1, 1]; r > 0 means the first layers cost more.
Duplicate records of one (order, n, seed) are averaged.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from scipy import stats

from .fit import as_number

FINAL_CHEAPER = "final layers cost less"
FIRST_CHEAPER = "first layers cost less"
NO_DIFFERENCE = "no significant difference"
TOO_FEW = "too few pairs"
MIN_PAIRS = 6  # the smallest n at which an exact two-sided Wilcoxon p can reach < 0.05


@dataclass(frozen=True)
class OrderComparison:
    model: str
    weight_bits: int
    method: str
    n_pairs: int
    n_nonzero: int
    median_diff_pp: float  # median(drop_first - drop_last); nan without pairs
    rank_biserial: float
    statistic: float
    p_value: float
    alpha: float
    verdict: str
    pairs: tuple  # ((n, seed, drop_first, drop_last), ...)

    def summary(self) -> str:
        if self.verdict == TOO_FEW:
            return f"{self.model} w{self.weight_bits} {self.method}: {TOO_FEW} ({self.n_pairs})"
        return (f"{self.model} w{self.weight_bits} {self.method}: {self.verdict} "
                f"(pairs={self.n_pairs}, median first-last={self.median_diff_pp:+.3g} pp, "
                f"r={self.rank_biserial:+.2f}, p={self.p_value:.3g})")


def pair_orders(records: Iterable[dict]) -> dict:
    """{(model, bits, method): [(n, seed, drop_first, drop_last), ...]} for matched (n, seed)."""
    drops = defaultdict(list)
    totals = {}
    for r in records:
        drop = as_number(r.get("accuracy_drop_pp"))
        if r.get("order") not in ("first", "last") or drop is None or r.get("n") is None:
            continue
        key = (r.get("model"), r.get("weight_bits"), r.get("method") or "qat")
        drops[key + (r["order"], int(r["n"]), r.get("seed"))].append(drop)
        if r.get("units_total") is not None:
            totals[key] = max(totals.get(key, 0), int(r["units_total"]))
    orders_seen = defaultdict(set)
    for key in drops:
        orders_seen[key[:3]].add(key[3])
    out = {key: [] for key, seen in orders_seen.items() if seen == {"first", "last"}}
    for (model, bits, method, order, n, seed), values in sorted(drops.items(), key=lambda kv: str(kv[0])):
        if order != "first":
            continue
        key = (model, bits, method)
        last = drops.get(key + ("last", n, seed))
        total = totals.get(key)
        if key in out and last and 0 < n and (total is None or n < total):
            out[key].append((n, seed, float(np.mean(values)), float(np.mean(last))))
    return {key: sorted(out[key], key=lambda p: (p[0], str(p[1]))) for key in sorted(out, key=str)}


def rank_biserial(diffs) -> float:
    """Matched-pairs rank-biserial correlation of the non-zero differences (nan if none)."""
    d = np.asarray(diffs, float)
    d = d[d != 0]
    if d.size == 0:
        return math.nan
    ranks = stats.rankdata(np.abs(d))
    plus, minus = ranks[d > 0].sum(), ranks[d < 0].sum()
    return float((plus - minus) / (plus + minus))


def wilcoxon_pairs(pairs, alpha: float = 0.05, min_pairs: int = MIN_PAIRS) -> tuple:
    """(median_diff, r, statistic, p, n_nonzero, verdict) for (n, seed, first, last) pairs."""
    diffs = np.array([p[2] - p[3] for p in pairs], float)
    nonzero = int(np.count_nonzero(diffs))
    median = float(np.median(diffs)) if diffs.size else math.nan
    if diffs.size < min_pairs:
        return median, rank_biserial(diffs), math.nan, math.nan, nonzero, TOO_FEW
    if nonzero == 0:
        return median, math.nan, 0.0, 1.0, 0, NO_DIFFERENCE
    result = stats.wilcoxon(diffs, zero_method="wilcox", alternative="two-sided")
    r = rank_biserial(diffs)
    p = float(result.pvalue)
    if p < alpha and r > 0:
        verdict = FINAL_CHEAPER
    elif p < alpha and r < 0:
        verdict = FIRST_CHEAPER
    else:
        verdict = NO_DIFFERENCE
    return median, r, float(result.statistic), p, nonzero, verdict


def compare_orders(records: Iterable[dict], alpha: float = 0.05, min_pairs: int = MIN_PAIRS) -> tuple:
    """One OrderComparison per (model, weight_bits, method) that has both orders."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    out = []
    for (model, bits, method), pairs in pair_orders(records).items():
        median, r, statistic, p, nonzero, verdict = wilcoxon_pairs(pairs, alpha, min_pairs)
        out.append(OrderComparison(model=model, weight_bits=bits, method=method, n_pairs=len(pairs),
                                   n_nonzero=nonzero, median_diff_pp=median, rank_biserial=r,
                                   statistic=statistic, p_value=p, alpha=alpha, verdict=verdict,
                                   pairs=tuple(pairs)))
    return tuple(out)
