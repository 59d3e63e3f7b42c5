"""Does the sensitivity score rank units the way measurement does? Pure: no TensorFlow (issue 17, item 1).

The ``sensitivity`` order trusts a predicted cost per unit (HAWQ-V2: Hessian trace times quantization
noise power, harness/case/sensitivity.py). Its check is the ``single`` order: one case per unit, each
quantizing only that unit, so its measured drop is that unit's real cost. Per (model, bits, method),
the Spearman rank correlation between the score and the drop (averaged over seeds) says whether the
score orders units correctly; only the order matters to a greedy selection, hence ranks, not values.

Seeds are the unit of replication (as in ``order_test``): the drops of one seed share its control, so
the interval comes from the seeds, not from the units: a percentile bootstrap that resamples whole
seeds (complete ones: every scored unit measured), recomputing the correlation of the score with the
resampled mean drop. The per-seed correlations are reported beside it. With few seeds the bootstrap
has few distinct resamples (2 seeds: 3), so its interval is coarse: read it with ``per_seed``.

Verdicts: TOO_FEW_UNITS below ``MIN_UNITS`` scored and measured units (a rank correlation of 3 points
takes only 4 values); TOO_FEW_SEEDS with fewer than ``MIN_SEEDS`` complete seeds. The interval is
given from ``INTERVAL_SEEDS`` on, but k seeds allow only C(2k-1, k) distinct resamples (2: 3, 3: 10,
4: 35, 5: 126), so below 5 its 2.5% tail is one or two resamples and excluding 0 proves nothing;
UNDEFINED when the scores or the mean drops are all equal; else AGREES / DISAGREES when the interval
excludes 0 AND the permutation test over units rejects a random ranking, UNCLEAR otherwise.

The bootstrap over seeds says how much the seeds disagree, not whether the ranking beats chance: with 5
units a random ranking reaches rho >= 0.7 with probability 0.12. ``permutation_p`` is the exact one-sided
p of rho over units, in the direction observed: the share of the n! orderings of the mean drops whose rho
is at least as extreme (all of them for n <= ``EXACT_UNITS``, else a fixed-seed Monte Carlo).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Optional

import numpy as np

AGREES = "score ranks units like the measured drops"
DISAGREES = "score ranks units against the measured drops"
UNCLEAR = "no clear rank correlation (the interval contains 0, or a random ranking does as well)"
TOO_FEW_UNITS = "too few units"
TOO_FEW_SEEDS = "too few seeds"
UNDEFINED = "undefined (scores or drops all equal)"
MIN_UNITS = 4
MIN_SEEDS = 5  # for a verdict (see above)
INTERVAL_SEEDS = 2  # for an interval, reported as a range of the seeds' disagreement, not a test
MEASURED = ("passed", "failed")  # a failed case (threshold broken) still measured its drop
EXACT_UNITS = 8  # 8! = 40,320 orderings: exact; beyond, Monte Carlo
PERMUTATION_DRAWS = 20_000
ALPHA = 0.05


def ranks(values) -> np.ndarray:
    """Ranks 1..n, ties get the mean of the ranks they span (as scipy.stats.rankdata 'average')."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    result = np.empty(len(values))
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        result[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return result


def spearman(x, y) -> Optional[float]:
    """Spearman's rho (Pearson correlation of the average ranks); None when undefined (a constant
    side, or fewer than 2 points)."""
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} values against {len(y)}")
    if len(x) < 2:
        return None
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float(np.sum(rx * rx) * np.sum(ry * ry)))
    if denominator == 0:
        return None
    return float(np.clip(np.sum(rx * ry) / denominator, -1.0, 1.0))


@dataclass(frozen=True)
class SpearmanResult:
    model: str
    bits: int
    method: str
    units: int  # units with a score and at least one measured drop
    seeds: tuple  # complete seeds (every one of those units measured), sorted
    rho: Optional[float]  # score vs mean drop over every seed that measured the unit
    per_seed: dict  # seed -> rho of that seed's drops (seeds with at least MIN_UNITS units)
    interval: Optional[tuple]  # (low, high): 95% percentile bootstrap over complete seeds
    verdict: str
    permutation_p: Optional[float] = None  # one-sided, in the direction of rho, over orderings of the units

    def as_dict(self) -> dict:
        return asdict(self)


def scores_from_records(records: Iterable[dict]) -> dict:
    """Scores stored by ``sensitivity`` cases: {(model, bits): {unit index: score}}. When cases of one
    (model, bits) come from different pre-trained models (a tier that pre-trains per seed), each seed
    has its own scores: keys are then (model, bits, seed)."""
    by_group: dict = defaultdict(dict)  # (model, bits) -> pretrained key -> (seeds, scores)
    for record in records:
        field = record.get("sensitivity")
        if not isinstance(field, dict) or not field.get("units"):
            continue
        group = (record["model"], int(field["bits"]))
        seeds, _ = by_group[group].setdefault(field.get("pretrained_key"), (set(), {
            int(u["index"]): float(u["score"]) for u in field["units"]}))
        seeds.add(int(record.get("seed") or 0))
    found: dict = {}
    for (model, bits), by_key in by_group.items():
        if len(by_key) == 1:
            found[(model, bits)] = next(iter(by_key.values()))[1]
            continue
        for seeds, scores in by_key.values():
            for seed in seeds:
                found[(model, bits, seed)] = scores
    return found


def _measured_drops(records: Iterable[dict]) -> dict:
    """{(model, bits, method): {seed: {unit index: drop pp}}} of measured ``single`` cases."""
    drops: dict = defaultdict(lambda: defaultdict(dict))
    for record in records:
        if record.get("order") != "single" or record.get("status") not in MEASURED:
            continue
        drop = record.get("accuracy_drop_pp")
        if drop is None or not math.isfinite(float(drop)):
            continue
        group = (record["model"], int(record["weight_bits"]), record.get("method") or "qat")
        drops[group][int(record.get("seed") or 0)][int(record["n"])] = float(drop)
    return drops


def _bootstrap(scores: np.ndarray, table: np.ndarray, resamples: int, seed: int) -> Optional[tuple]:
    """95% percentile interval of rho(score, mean drop over resampled seeds); ``table``: seeds x units."""
    rng = np.random.default_rng(seed)
    rhos = []
    for _ in range(resamples):
        picked = table[rng.integers(0, len(table), size=len(table))]
        rho = spearman(scores, picked.mean(axis=0))
        if rho is not None:
            rhos.append(rho)
    if not rhos:
        return None
    low, high = np.percentile(rhos, [2.5, 97.5])
    return float(low), float(high)


@functools.lru_cache(maxsize=EXACT_UNITS)
def _orderings(n: int) -> np.ndarray:
    """Every permutation of range(n), once per n (8!: 40,320 x 8)."""
    return np.array(list(itertools.permutations(range(n))), dtype=np.int8)


def permutation_p(x, y, draws: int = PERMUTATION_DRAWS, seed: int = 0) -> Optional[float]:
    """One-sided p of Spearman's rho(x, y) in its observed direction over orderings of y: exact for
    n <= EXACT_UNITS (every ordering; the observed one is among them), else (1 + hits) / (1 + draws)."""
    rho = spearman(x, y)
    if rho is None:
        return None
    rx, ry = ranks(x), ranks(y)
    rx = rx - rx.mean()
    n = len(rx)
    if n <= EXACT_UNITS:
        orderings, offset = ry[_orderings(n)], 0
    else:
        orderings, offset = np.random.default_rng(seed).permuted(np.tile(ry, (draws, 1)), axis=1), 1
    centred = orderings - ry.mean()
    rhos = centred @ rx / math.sqrt(float(rx @ rx) * float(centred[0] @ centred[0]))
    tolerance = 1e-9
    hits = np.sum(rhos >= rho - tolerance) if rho >= 0 else np.sum(rhos <= rho + tolerance)
    return float((hits + offset) / (len(rhos) + offset))


def _verdict(units: int, seeds: int, rho, interval, perm_p=None) -> str:
    if units < MIN_UNITS:
        return TOO_FEW_UNITS
    if rho is None:
        return UNDEFINED
    if seeds < MIN_SEEDS or interval is None:
        return TOO_FEW_SEEDS
    beats_chance = perm_p is not None and perm_p < ALPHA
    if interval[0] > 0 and beats_chance:
        return AGREES
    if interval[1] < 0 and beats_chance:
        return DISAGREES
    return UNCLEAR


def _check_group(key: tuple, by_seed: Mapping, own: Mapping, resamples: int, seed: int) -> SpearmanResult:
    """``by_seed``: seed -> {unit: drop}; ``own``: seed -> {unit: score} of the model that seed measured.
    A seed is ranked against its own scores; the pooled rho and the bootstrap use their mean."""
    model, bits, method = key
    scores = {u: float(np.mean([v[u] for v in own.values() if u in v])) for v in own.values() for u in v}
    units = sorted(u for u in scores if any(u in drops for drops in by_seed.values()))
    mean_drop = [float(np.mean([d[u] for d in by_seed.values() if u in d])) for u in units]
    unit_scores = np.array([scores[u] for u in units])
    rho = spearman(unit_scores, mean_drop) if len(units) >= MIN_UNITS else None
    per_seed = {}
    for s, drops in sorted(by_seed.items()):
        measured = [u for u in units if u in drops and u in own[s]]
        if len(measured) >= MIN_UNITS:
            per_seed[s] = spearman([own[s][u] for u in measured], [drops[u] for u in measured])
    complete = sorted(s for s, drops in by_seed.items() if all(u in drops for u in units))
    interval = None
    if len(units) >= MIN_UNITS and len(complete) >= INTERVAL_SEEDS and rho is not None:
        table = np.array([[by_seed[s][u] for u in units] for s in complete])
        interval = _bootstrap(unit_scores, table, resamples, seed)
    perm = permutation_p(unit_scores, mean_drop) if rho is not None else None
    return SpearmanResult(model, bits, method, len(units), tuple(complete), rho, per_seed, interval,
                          _verdict(len(units), len(complete), rho, interval, perm), perm)


def spearman_check(records: Iterable[dict], scores: Mapping, resamples: int = 2000, seed: int = 0) -> list:
    """One SpearmanResult per (model, bits, method) of measured ``single`` cases that has scores.

    ``scores``: {(model, bits): {unit index: score}} (``scores_from_records`` builds it from the
    records of ``sensitivity`` cases), or per seed {(model, bits, seed): ...} when each seed has its
    own pre-trained model (a seed without scores of its own is left out: another seed's model is not
    the one it measured). Each seed's drops are ranked against its own scores (``per_seed``); the
    pooled rho and its interval rank the mean drop against the mean of those seeds' scores."""
    results = []
    for key, by_seed in sorted(_measured_drops(records).items()):
        model, bits, _ = key
        own = {s: scores.get((model, bits, s), scores.get((model, bits))) for s in by_seed}
        own = {s: v for s, v in own.items() if v}
        if own:
            results.append(_check_group(key, {s: by_seed[s] for s in own}, own, resamples, seed))
    return results


def describe(results: Iterable[SpearmanResult]) -> list:
    """One line per group, for a report or a closing note."""
    lines = []
    for r in results:
        rho = "n/a" if r.rho is None else f"{r.rho:+.2f}"
        interval = "" if r.interval is None else f" [{r.interval[0]:+.2f}, {r.interval[1]:+.2f}]"
        seeds = ", ".join(f"s{s} {'n/a' if v is None else f'{v:+.2f}'}" for s, v in r.per_seed.items())
        kind = f"exact over {math.factorial(r.units):,} orderings" if r.units <= EXACT_UNITS else "Monte Carlo"
        perm = "" if r.permutation_p is None else f", permutation p = {r.permutation_p:.3g} (one-sided, {kind} of the units)"
        lines.append(f"{r.model} W{r.bits} {r.method}: Spearman rho {rho}{interval} over {r.units} units{perm}, "
                     f"{len(r.seeds)} seeds (per seed: {seeds or 'none'}): {r.verdict}")
    return lines
