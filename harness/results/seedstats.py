"""Seeds are the unit of replication: statistics across seeds. Pure (numpy/scipy only).

Every run of a seed shares that seed's float control, initialisation and data order, so the drops
of one seed at different N (or in the two orders) are correlated: a seed that happened to train a
strong control shifts all of them. Tests and intervals therefore work on one value per seed, never
on one value per (N, seed) point, which would count the same seed shift many times over.

- ``sign_flip_test``: exact two-sided permutation test of per-seed differences (all 2^k sign
  vectors up to k = ``MAX_EXACT``; a fixed-seed Monte Carlo beyond). Under H0 (no difference) each
  seed's difference is symmetric about 0, so every sign vector is equally likely.
- ``min_sign_flip_p``: the smallest p any k pairs can give, 2^(1-k): with 3 seeds, 0.25.
- ``holm``: Holm's step-down adjustment (family-wise error control, any dependence).
- ``pooled_sd``, ``mean_interval``: within-group spread with its degrees of freedom; t-interval of a mean.
- ``noise_model``: splits the within-N spread of drops across seeds into the shift a seed applies
  to every N (``seed_shift``) and the rest of one run's deviation, by an additive two-way
  decomposition (N effect + seed effect) of the (N, seed) cell means.
- ``sampling_var_pp2``: the binomial variance of one paired drop measured on n_test examples.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, Optional, Sequence

import numpy as np
from scipy import stats

from harness.results.records import MEASURED

MAX_EXACT = 16  # 2^16 sign vectors x 16 values: a few MB, milliseconds
MONTE_CARLO_DRAWS = 200_000
CONFIDENCE = 0.95


def as_number(value) -> Optional[float]:
    """A finite float, or None (None, bools, text, nan, inf)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def drop_of(record: dict) -> Optional[float]:
    """The finite accuracy_drop_pp of a measured record, else None."""
    if record.get("status", "passed") not in MEASURED:
        return None
    return as_number(record.get("accuracy_drop_pp"))


def cell_means(records: Iterable[dict], key: Callable[[dict], Hashable] = lambda r: r.get("n"),
               value: Callable[[dict], Optional[float]] = drop_of) -> dict:
    """{(key, seed): mean value} over records; repeated runs of one cell are averaged."""
    cells = defaultdict(list)
    for record in records:
        v = value(record)
        k = key(record)
        if v is not None and k is not None:
            cells[(k, record.get("seed"))].append(v)
    return {cell: float(np.mean(values)) for cell, values in cells.items()}


def by_seed(cells: dict) -> dict:
    """{seed: {key: value}} from cell_means output."""
    out = defaultdict(dict)
    for (key, seed), v in cells.items():
        out[seed][key] = v
    return dict(out)


def _sign_matrix(k: int) -> np.ndarray:
    codes = np.arange(2 ** k, dtype=np.int64)[:, None]
    return ((codes >> np.arange(k)) & 1) * 2.0 - 1.0


def sign_flip_p(values, max_exact: int = MAX_EXACT, draws: int = MONTE_CARLO_DRAWS, rng_seed: int = 0):
    """Two-sided sign-flip p of mean(values) != 0; values of shape (..., k) give p of shape (...).

    Statistic |sum|; p = share of sign vectors with |sum| >= the observed one (the observed vector
    is among them, so p > 0). k = 0 gives 1. Beyond ``max_exact`` values: (1 + hits) / (1 + draws)
    over random sign vectors from a fixed seed (deterministic, still a valid p-value).
    """
    v = np.asarray(values, float)
    k = v.shape[-1] if v.ndim else 0
    if k == 0:
        return np.ones(v.shape[:-1]) if v.ndim > 1 else 1.0
    if k <= max_exact:
        signs, offset = _sign_matrix(k), 0
    else:
        signs = np.random.default_rng(rng_seed).choice([-1.0, 1.0], size=(draws, k))
        offset = 1
    observed = np.abs(v.sum(axis=-1))
    flipped = np.abs(v @ signs.T)  # (..., 2^k)
    tolerance = 1e-9 * (1.0 + np.abs(v).sum(axis=-1))  # equal sums must not differ by rounding
    hits = (flipped >= (observed - tolerance)[..., None]).sum(axis=-1)
    p = (hits + offset) / (signs.shape[0] + offset)
    return float(p) if np.ndim(p) == 0 else p


def min_sign_flip_p(k: int) -> float:
    """The smallest two-sided sign-flip p that k pairs can reach (all of one sign): 2^(1-k)."""
    return 1.0 if k <= 0 else min(1.0, 2.0 ** (1 - k))


def holm(pvalues: Sequence[float]) -> tuple:
    """Holm step-down adjusted p-values, in input order; nan stays nan and is not counted in m."""
    p = np.asarray(pvalues, float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m:
        order = ok[np.argsort(p[ok], kind="stable")]
        scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
        out[order] = np.maximum.accumulate(scaled)
    return tuple(float(v) for v in out)


def best_holm_p(k: int, m: int) -> float:
    """The smallest Holm-adjusted p a test with k pairs can reach in a family of m tests."""
    return min(1.0, max(m, 1) * min_sign_flip_p(k))


def pooled_sd(groups: Iterable[Sequence[float]]) -> tuple:
    """(sd, dof): sqrt of the pooled within-group variance; (nan, 0) when no group has 2 values."""
    ss, dof = 0.0, 0
    for group in groups:
        g = np.asarray(group, float)
        if g.size >= 2:
            ss += float(np.sum((g - g.mean()) ** 2))
            dof += g.size - 1
    return (math.sqrt(ss / dof), dof) if dof else (math.nan, 0)


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple:
    """(mean, low, high): Student-t interval of the mean; low/high nan with fewer than 2 values."""
    v = np.asarray(values, float)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


MIN_ROUNDS_FOR_INTERVAL = 6  # with 5 rounds the widest order-statistic interval covers only 93.75%


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple:
    """Distribution-free interval for the median: (x_(k), x_(n+1-k)) with the largest k whose
    coverage 1 - 2 P(Binomial(n, 1/2) < k) is still >= ``confidence``. (None, None) when no k reaches
    it (fewer than MIN_ROUNDS_FOR_INTERVAL values at 95%). Pure."""
    ordered = sorted(float(v) for v in values)
    n = len(ordered)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    best = None
    tail = 0.0  # P(B < k), B ~ Binomial(n, 1/2)
    for k in range(1, n // 2 + 1):
        tail += math.comb(n, k - 1) / 2.0 ** n
        if 1.0 - 2.0 * tail >= confidence:
            best = k
    if best is None:
        return None, None
    return ordered[best - 1], ordered[n - best]


def satterthwaite(terms: Iterable[tuple]) -> float:
    """Welch-Satterthwaite dof of a sum of independent variance estimates [(variance, dof), ...].

    Terms may be negative (a mean square subtracted); dof inf marks a known variance."""
    terms = [(float(v), float(d)) for v, d in terms if v != 0]
    total = sum(v for v, _ in terms)
    spread = sum(v * v / d for v, d in terms if math.isfinite(d) and d > 0)
    return total * total / spread if spread > 0 and total > 0 else math.inf


@dataclass(frozen=True)
class Noise:
    """How far one new run's drop strays from the true curve, from replicate seeds (pp²).

    within = seed_part + resid_share * resid_ms, two independent mean-square pieces with
    seed_dof and resid_dof degrees of freedom; seed_shift = within - resid_ms (>= 0)."""

    within: float  # pooled within-N variance across seeds: all of one run's deviation
    within_dof: float  # Satterthwaite dof of `within` (few seeds -> few dof, however many N)
    seed_shift: float  # the part of `within` a seed applies to every N alike (0 if not separable)
    seed_dof: int  # seeds - 1 (0 when no seed appears at two N)
    seeds: int
    cells: int
    seed_part: float = 0.0  # seed SS / within dof
    resid_ms: float = 0.0  # residual mean square of the additive (N + seed) model
    resid_dof: int = 0

    def terms(self, shift_gain: float, run: bool) -> list:
        """Independent (variance, dof) pieces of shift_gain * seed_shift (+ within when ``run``)."""
        if self.seed_dof == 0 or self.resid_dof == 0:
            return [(self.within, self.within_dof)] if run else []
        share = self.resid_dof / (self.seed_dof + self.resid_dof)
        gain = shift_gain if self.seed_shift > 0 else 0.0
        seed_coef = gain + (1.0 if run else 0.0)
        resid_coef = -gain * (1.0 - share) + (share if run else 0.0)
        # For the dof only, the seed piece is not taken below its expectation without any seed
        # effect: a seed SS that came out small by chance must not buy the band many dof.
        seed_piece = max(self.seed_part, self.resid_ms * self.seed_dof / (self.seed_dof + self.resid_dof))
        return [(seed_coef * seed_piece, self.seed_dof), (resid_coef * self.resid_ms, self.resid_dof)]


def noise_model(cells: dict) -> Optional[Noise]:
    """Variance components of {(n, seed): drop}; None when no N has two seeds.

    Fits drop = a_N + u_seed by least squares. Its residual mean square estimates the run-specific
    variance; the within-N pooled variance is (seed SS + residual SS) / within dof, with the seed SS
    carrying only seeds - 1 dof: with 3 seeds the spread is known to ~2 dof, not to 2 x (number of N).
    """
    ns = sorted({n for n, _ in cells}, key=str)
    seeds = sorted({s for _, s in cells}, key=str)
    groups = defaultdict(list)
    for (n, _), v in cells.items():
        groups[n].append(v)
    within_sd, within_dof = pooled_sd(groups.values())
    if within_dof == 0:
        return None
    within_ss = within_sd ** 2 * within_dof
    design = np.zeros((len(cells), len(ns) + len(seeds) - 1))
    y = np.zeros(len(cells))
    for row, ((n, seed), v) in enumerate(cells.items()):
        design[row, ns.index(n)] = 1.0
        if seeds.index(seed):
            design[row, len(ns) + seeds.index(seed) - 1] = 1.0
        y[row] = v
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid_ss = float(np.sum((y - design @ coef) ** 2))
    resid_dof = len(cells) - int(np.linalg.matrix_rank(design))
    seed_dof = within_dof - resid_dof
    within = within_ss / within_dof
    if resid_dof <= 0 or seed_dof <= 0:  # no seed appears at two N: no shared shift to separate
        return Noise(within, float(within_dof), 0.0, 0, len(seeds), len(cells))
    seed_part, resid_ms = (within_ss - resid_ss) / within_dof, resid_ss / resid_dof
    dof = satterthwaite([(seed_part, seed_dof), (resid_ss / within_dof, resid_dof)])
    return Noise(within, min(dof, float(within_dof)), max(0.0, within - resid_ms), seed_dof, len(seeds),
                 len(cells), seed_part, resid_ms, resid_dof)


def sampling_var_pp2(record: dict) -> Optional[float]:
    """Binomial variance of the record's paired drop, pp²; None without discordant counts.

    With b control-only and c quant-only examples out of n: var(drop) = ((b+c)/n - ((b-c)/n)^2) / n.
    """
    table, n = record.get("discordant"), record.get("n_test")
    if not isinstance(table, dict) or not isinstance(n, (int, float)) or isinstance(n, bool) or n <= 0:
        return None
    b, c = table.get("control_only"), table.get("quant_only")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in (b, c)):
        return None
    var = ((b + c) / n - ((b - c) / n) ** 2) / n
    return max(0.0, var) * 1e4
