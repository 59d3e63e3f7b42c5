"""How many seeds: the effect the analysis's exact sign-flip test detects with 80% power. Pure (numpy).

The order test, the frontier and the single-unit costs all test per-seed values (one number per seed: a
seed's mean drop difference, or a drop) with the exact two-sided sign-flip test of their mean
(``seedstats.sign_flip_p``), at alpha after Holm over the family. Given k seeds whose values scatter with
SD ``sd`` around a true effect, ``detectable_effect`` is the smallest true effect that the test calls at
least ``target`` (80%) of the time; ``seeds_needed`` the fewest seeds for which that is at most a given
effect (issue 32: <= 0.2 pp at W8, <= 0.5 pp at W4).

Model: the k values are independent Normal(effect, sd). The test is invariant to scale, so the power
depends on effect / sd only: one standardized effect is found (common random numbers, bisection) and
multiplied by ``sd``. In a family of m tests the level is alpha / m, Holm's first step: the bar the test
with the smallest p must clear, so this is the power to detect an effect present in one comparison when
every other comparison is null (conservative otherwise). With 2 / 2^k >= that level no effect is
detectable at all (``math.inf``). The p-value is the exact one up to MAX_SUBSET seeds (subset sums, meet in
the middle; for k <= seedstats.MAX_EXACT it equals seedstats.sign_flip_p), beyond that seedstats.sign_flip_p's
random sign vectors (SIGN_DRAWS of them, a fixed seed), as the analysis itself uses past its exact range.
"""

from __future__ import annotations

import math

import numpy as np

from harness.results import seedstats

TARGET = 0.8
DRAWS = 2000
RNG_SEED = 0


def _subset_sums(a: np.ndarray) -> np.ndarray:
    sums = np.zeros(1)
    for value in a:
        sums = np.concatenate([sums, sums + value])
    return sums


def exact_p(values) -> float:
    """The exact two-sided sign-flip p of mean(values) != 0: the share of the 2^k sign vectors s with
    |sum s_i |v_i|| >= |sum v_i| (the same tolerance for equal sums as seedstats.sign_flip_p). Flipping a
    subset F of the |v_i| gives A - 2 sum_F, so it counts subsets by their sum, half against half."""
    v = np.asarray(values, float).ravel()
    k = len(v)
    if k == 0:
        return 1.0
    a = np.abs(v)
    total, observed = a.sum(), abs(v.sum())
    threshold = observed - 1e-9 * (1.0 + total)
    left, right = _subset_sums(a[: k // 2]), np.sort(_subset_sums(a[k // 2:]))
    # |total - 2 (l + r)| >= threshold  <=>  l + r <= (total - threshold) / 2  or  l + r >= (total + threshold) / 2
    low = np.searchsorted(right, (total - threshold) / 2 - left, side="right")
    high = len(right) - np.searchsorted(right, (total + threshold) / 2 - left, side="left")
    hits = int(low.sum() + high.sum())
    if threshold <= 0:  # every sign vector qualifies; the two counts above overlap
        hits = 2 ** k
    return min(1.0, hits / 2 ** k)


def level(alpha: float = 0.05, family: int = 1) -> float:
    if not 0 < alpha < 1 or family < 1:
        raise ValueError(f"alpha must be in (0, 1) and family >= 1, got {alpha}, {family}")
    return alpha / family


def _noise(seeds: int, draws: int, rng_seed: int) -> np.ndarray:
    return np.random.default_rng(rng_seed).standard_normal((draws, seeds))


MAX_SUBSET = 24  # beyond: 2^12+ subset sums per half per draw get slow; the analysis's own random signs instead
SIGN_DRAWS = 20_000


def _power(standardized: float, noise: np.ndarray, bar: float) -> float:
    if noise.shape[1] > MAX_SUBSET:  # seedstats.sign_flip_p with fewer random sign vectors than its default
        return float(np.mean(seedstats.sign_flip_p(standardized + noise, draws=SIGN_DRAWS) < bar))
    return float(np.mean([exact_p(standardized + row) < bar for row in noise]))


def power(effect: float, sd: float, seeds: int, alpha: float = 0.05, family: int = 1, draws: int = DRAWS,
          rng_seed: int = RNG_SEED) -> float:
    """The share of ``draws`` simulated runs (k = ``seeds`` values ~ Normal(effect, sd)) whose exact
    sign-flip p is below alpha / family."""
    if sd <= 0 or seeds < 1:
        raise ValueError(f"sd must be > 0 and seeds >= 1, got {sd}, {seeds}")
    return _power(effect / sd, _noise(seeds, draws, rng_seed), level(alpha, family))


def detectable_effect(seeds: int, sd: float, alpha: float = 0.05, family: int = 1, target: float = TARGET,
                      draws: int = DRAWS, rng_seed: int = RNG_SEED, tolerance: float = 0.005) -> float:
    """The smallest true effect (in ``sd``'s unit, e.g. pp) detected with probability >= ``target``
    (module docstring); math.inf when k seeds cannot reach alpha / family at all."""
    if sd <= 0 or seeds < 1 or not 0 < target < 1:
        raise ValueError(f"sd must be > 0, seeds >= 1 and target in (0, 1), got {sd}, {seeds}, {target}")
    bar = level(alpha, family)
    if 2.0 ** (1 - seeds) >= bar:
        return math.inf
    noise = _noise(seeds, draws, rng_seed)
    low, high = 0.0, 1.0
    while _power(high, noise, bar) < target:
        low, high = high, high * 2
    while high - low > tolerance:
        mid = (low + high) / 2
        low, high = (low, mid) if _power(mid, noise, bar) >= target else (mid, high)
    return high * sd


def seeds_needed(effect: float, sd: float, alpha: float = 0.05, family: int = 1, target: float = TARGET,
                 max_seeds: int = 60, draws: int = DRAWS, rng_seed: int = RNG_SEED) -> int:
    """The fewest seeds whose detectable effect is <= ``effect``; ValueError beyond ``max_seeds``."""
    for k in range(1, max_seeds + 1):
        if detectable_effect(k, sd, alpha, family, target, draws, rng_seed) <= effect:
            return k
    raise ValueError(f"more than {max_seeds} seeds needed to detect {effect} at SD {sd}")
