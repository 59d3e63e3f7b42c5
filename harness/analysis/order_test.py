"""Does quantizing the final layers cost less accuracy than quantizing the first ones? Pure.

Seeds are the unit of replication (see ``seedstats``): the drops of one seed at every N and in both
orders share its control, so per-(N, seed) pairs are not independent and a test over them is
anti-conservative. Per (model, weight_bits, method), two per-seed summaries of drop_first - drop_last:

- matched on N: the mean over 0 < N < units_total (at 0 and units_total both orders quantize the
  same units) of drop_first(N) - drop_last(N), over the N measured in both orders for that seed;
- matched on the share of weights quantized (param_fraction): for each last-N point (0 < N <
  units_total) whose fraction lies within that seed's measured first-order fractions, the
  first-order drop is interpolated linearly in fraction between measured first points, and
  drop_first(f) - drop_last(f) is averaged. No anchor (f = 0, drop = 0) is added: the drop at N = 0
  is itself a measurement (fine-tuning noise), so it is used only where it was measured.

The same test runs for the inner pair (``first-inner`` against ``last-inner``, issue 32 item b): N then
counts inner units, and 0 < N < units_total - 2 (the first and the last unit are held out of both).

Each summary gets an exact two-sided sign-flip test over seeds. One pre-registered family
(``harness.design.family``): each comparison declares its one matching before the data are seen;
that test is the group's, the other matching is reported as description only (NOT_TESTED). Holm's
adjustment runs over the declared tests whose seeds can reach significance at all: with k pairs the
smallest two-sided p is 2/2^k, and a test with 2/2^k >= alpha is reported (TOO_FEW) but not counted,
since it would only dilute the others. Verdict of a counted test: FINAL_CHEAPER / FIRST_CHEAPER when
the Holm-adjusted p < alpha, TOO_FEW when even the same sign in every seed could not reach alpha
after Holm over the family, else NO_DIFFERENCE.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Iterable, Optional

import numpy as np

from harness.results import seedstats
from harness.analysis.drop_fit import as_number
from harness.design.family import HELD_OUT, INNER, LAST_VS_FIRST, WHOLE, Family

FINAL_CHEAPER = "final layers cost less"
FIRST_CHEAPER = "first layers cost less"
NO_DIFFERENCE = "no significant difference"
TOO_FEW = "too few pairs"
NOT_TESTED = "not tested (not the declared matching: description only)"
MATCHINGS = ("n", "fraction")
FAMILY_MATCHING = {"n": "n", "share": "fraction"}  # harness.design.family's names -> these
MATCHING_TEXT = {"n": "matched on N", "fraction": "matched on the share of weights quantized"}


@dataclass(frozen=True)
class MatchedTest:
    matching: str  # "n" or "fraction"
    seed_values: tuple  # ((seed, mean drop_first - drop_last in pp, matched points), ...)
    mean_diff_pp: float  # mean of the per-seed values; nan without seeds
    p_value: float  # exact sign-flip p over seeds; nan without seeds
    p_holm: float
    best_p_holm: float  # the smallest Holm-adjusted p these seeds could reach at all
    verdict: str
    counted: bool = False  # in the Holm family (declared matching, and its seeds can reach alpha)
    declared: bool = False  # the comparison's declared matching (else description only)

    @property
    def n_seeds(self) -> int:
        return len(self.seed_values)

    @property
    def n_points(self) -> int:
        return sum(points for _, _, points in self.seed_values)


@dataclass(frozen=True)
class OrderComparison:
    model: str
    weight_bits: int
    method: str
    alpha: float
    tests_in_family: int  # p-values Holm adjusted over: the counted declared tests of the run
    by_n: MatchedTest
    by_fraction: MatchedTest
    pairs: tuple  # ((n, seed, drop_first, drop_last), ...): the N-matched points behind by_n
    primary: str = "n"  # the declared matching ("n" or "fraction"); "" when none is declared
    registered: bool = False  # the family names this comparison (else the default for an unnamed model)
    orders: tuple = WHOLE  # (first order, last order): WHOLE, or INNER (the first and last unit held out)

    @property
    def inner(self) -> bool:
        return self.orders == INNER

    @property
    def test(self) -> MatchedTest:
        """The group's test: the declared matching (N when none is declared)."""
        return self.by_fraction if self.primary == "fraction" else self.by_n

    @property
    def verdict(self) -> str:
        return self.test.verdict

    @property
    def p_value(self) -> float:
        return self.test.p_value

    @property
    def n_seeds(self) -> int:
        return self.test.n_seeds

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    def sentences(self) -> tuple:
        """The group's declared test first, then the other matching (description only)."""
        other = self.by_n if self.test is self.by_fraction else self.by_fraction
        return self.sentence(self.test), self.sentence(other)

    def sentence(self, test: MatchedTest) -> str:
        head = f"{self.model}{' inner' if self.inner else ''} w{self.weight_bits} {self.method}"
        units = " inner units (the first and last unit held out)" if self.inner else ""
        if not test.n_seeds:
            return (f"{head}, {MATCHING_TEXT[test.matching]}: no seed has comparable points in both orders: "
                    f"{TOO_FEW if test.declared else NOT_TESTED}")
        diff = test.mean_diff_pp
        direction = "less" if diff >= 0 else "more"
        seeds = f"{test.n_seeds} seed" + ("s" if test.n_seeds != 1 else "")
        holm = (f"Holm-adjusted {test.p_holm:.3g}" if test.counted else
                "not counted in the family" if test.declared else "descriptive")
        text = (f"{head}: quantizing the last N{units} costs {abs(diff):.2f} pp {direction} than the first N "
                f"(per-seed mean, {seeds}, {MATCHING_TEXT[test.matching]}; sign-flip p = {test.p_value:.3g}, "
                f"{holm}): {test.verdict}")
        if test.verdict == TOO_FEW and not test.counted:
            text += (f", since even the same sign in all {seeds} gives p = {seedstats.min_sign_flip_p(test.n_seeds):.3g} "
                     f"at best, not < {self.alpha:g}: reported, not counted in Holm")
        elif test.verdict == TOO_FEW:
            text += (f", since even the same sign in all {seeds} gives at best {test.best_p_holm:.3g} "
                     f"after Holm over {self.tests_in_family} tests, not < {self.alpha:g}")
        return text

    def summary(self) -> str:
        return " ".join(self.sentences())


def _orders_by_seed(records: Iterable[dict], orders: tuple = WHOLE) -> tuple:
    """({group: {(role, seed): {n: (drop, fraction or None)}}}, {group: units both orders may quantize}),
    role "first" or "last" for ``orders`` (first order, last order): WHOLE or INNER."""
    cells = defaultdict(lambda: defaultdict(list))
    totals = {}
    role = dict(zip(orders, ("first", "last")))
    for r in records:
        drop = seedstats.drop_of(r)
        if r.get("order") not in role or drop is None or r.get("n") is None:
            continue
        key = (r.get("model"), r.get("weight_bits"), r.get("method") or "qat")
        cells[key][(role[r["order"]], r.get("seed"), int(r["n"]))].append((drop, as_number(r.get("param_fraction"))))
        if r.get("units_total") is not None:  # inner orders: N counts the units left after the held-out ends
            totals[key] = max(totals.get(key, 0), int(r["units_total"]) - HELD_OUT[orders])
    out = {}
    for key, table in cells.items():
        if {order for order, _, _ in table} != {"first", "last"}:
            continue
        per_seed = defaultdict(dict)
        for (order, seed, n), values in table.items():
            fractions = [f for _, f in values if f is not None]
            per_seed[(order, seed)][n] = (float(np.mean([d for d, _ in values])),
                                          float(np.mean(fractions)) if fractions else None)
        out[key] = dict(per_seed)
    return out, totals


def _inside(n: int, total: Optional[int]) -> bool:
    return 0 < n and (total is None or n < total)


def _matched_on_n(first: dict, last: dict, total: Optional[int], seed) -> list:
    return [(n, seed, first[n][0], last[n][0]) for n in sorted(set(first) & set(last)) if _inside(n, total)]


def _matched_on_fraction(first: dict, last: dict, total: Optional[int]) -> list:
    """drop_first(f) - drop_last(f) for each inside last point whose f the first points bracket."""
    known = sorted((f, d) for d, f in first.values() if f is not None)
    if not known:
        return []
    xs = np.array([f for f, _ in known])
    unique = np.unique(xs)
    ys = np.array([np.mean([d for f, d in known if f == u]) for u in unique])
    diffs = []
    for n, (drop_last, f) in sorted(last.items()):
        if f is not None and _inside(n, total) and unique[0] <= f <= unique[-1]:
            diffs.append(float(np.interp(f, unique, ys)) - drop_last)
    return diffs


def _seed_values(groups: dict, totals: dict) -> dict:
    """{group: (n-matched per-seed values, fraction-matched per-seed values, n-matched pairs)}."""
    out = {}
    for key in sorted(groups, key=lambda k: tuple(str(p) for p in k)):
        table, total = groups[key], totals.get(key)
        by_n, by_f, pairs = [], [], []
        seeds = sorted({seed for order, seed in table if order == "first"} &
                       {seed for order, seed in table if order == "last"}, key=str)
        for seed in seeds:
            first, last = table[("first", seed)], table[("last", seed)]
            matched = _matched_on_n(first, last, total, seed)
            if matched:
                pairs += matched
                by_n.append((seed, float(np.mean([p[2] - p[3] for p in matched])), len(matched)))
            diffs = _matched_on_fraction(first, last, total)
            if diffs:
                by_f.append((seed, float(np.mean(diffs)), len(diffs)))
        out[key] = (by_n, by_f, pairs)
    return out


def pair_orders(records: Iterable[dict], orders: tuple = WHOLE) -> dict:
    """{(model, bits, method): [(n, seed, drop_first, drop_last), ...]} for N matched within a seed."""
    groups, totals = _orders_by_seed(records, orders)
    return {key: sorted(v[2], key=lambda p: (p[0], str(p[1]))) for key, v in _seed_values(groups, totals).items()}


def _raw_test(matching: str, seed_values: list) -> MatchedTest:
    values = [v for _, v, _ in seed_values]
    p = seedstats.sign_flip_p(values) if values else math.nan
    mean = float(np.mean(values)) if values else math.nan
    return MatchedTest(matching, tuple(seed_values), mean, p, math.nan, 1.0, TOO_FEW)


def _verdict(test: MatchedTest, p_holm: float, family: int, alpha: float) -> MatchedTest:
    """A counted test's verdict after Holm over ``family`` tests."""
    best = seedstats.best_holm_p(test.n_seeds, family) if test.n_seeds else 1.0
    if not test.n_seeds or best >= alpha:
        verdict = TOO_FEW
    elif p_holm < alpha:
        verdict = FINAL_CHEAPER if test.mean_diff_pp > 0 else FIRST_CHEAPER
    else:
        verdict = NO_DIFFERENCE
    return replace(test, p_holm=p_holm, best_p_holm=best, verdict=verdict, counted=True, declared=True)


def reachable(test: MatchedTest, alpha: float) -> bool:
    """Can these seeds reach p < alpha at all (before any adjustment)? 2/2^k < alpha."""
    return test.n_seeds > 0 and seedstats.min_sign_flip_p(test.n_seeds) < alpha


def _primaries(raw: dict, family: Family) -> dict:
    """{group: (declared matching or "", registered)} per ``family`` (see harness.design.family); a group
    is (model, bits, method, orders)."""
    out = {}
    for key in raw:
        comparison, registered = family.for_group(*key)
        out[key] = ("" if comparison is None else FAMILY_MATCHING[comparison.matching], registered)
    return out


def compare_orders(records: Iterable[dict], alpha: float = 0.05, family: Family = LAST_VS_FIRST) -> tuple:
    """One OrderComparison per (model, weight_bits, method) with both orders; Holm over the family's
    declared tests that can reach significance (module docstring)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    records = list(records)
    raw = {}
    for orders in (WHOLE, INNER):  # one family over both pairs (harness.design.family)
        groups, totals = _orders_by_seed(records, orders)
        raw.update({(*key, orders): {"n": _raw_test("n", by_n), "fraction": _raw_test("fraction", by_f),
                                     "pairs": pairs}
                    for key, (by_n, by_f, pairs) in _seed_values(groups, totals).items()})
    primary = _primaries(raw, family)
    counted = [key for key in raw if primary[key][0] and reachable(raw[key][primary[key][0]], alpha)]
    adjusted = dict(zip(counted, seedstats.holm([raw[key][primary[key][0]].p_value for key in counted])))
    out = []
    for key, tests in raw.items():
        matching, registered = primary[key]
        for name in MATCHINGS:
            if name != matching:
                tests[name] = replace(tests[name], verdict=NOT_TESTED)
            elif key in adjusted:
                tests[name] = _verdict(tests[name], adjusted[key], len(counted), alpha)
            else:  # declared, but these seeds cannot reach alpha: reported, not counted
                tests[name] = replace(tests[name], verdict=TOO_FEW, declared=True)
        out.append(OrderComparison(model=key[0], weight_bits=key[1], method=key[2], alpha=alpha,
                                   tests_in_family=len(counted), by_n=tests["n"], by_fraction=tests["fraction"],
                                   pairs=tuple(sorted(tests["pairs"], key=lambda p: (p[0], str(p[1])))),
                                   primary=matching, registered=registered, orders=key[3]))
    return tuple(out)


def family_text(comparisons: Iterable[OrderComparison], family: Family = LAST_VS_FIRST) -> str:
    """One sentence naming the family: the counted tests, and those reported but not counted."""
    comparisons = list(comparisons)
    counted = [c for c in comparisons if c.test.counted]
    left = [c for c in comparisons if c.primary and not c.test.counted]
    name = lambda c: (f"{c.model}{' inner' if c.inner else ''} W{c.weight_bits} {c.method.upper()} "  # noqa: E731
                      f"({'share' if c.primary == 'fraction' else 'N'})")
    text = (f"Holm over {len(counted)} test(s) of the pre-registered family '{family.name}' "
            f"(harness/design/family.py; one declared matching each): {', '.join(map(name, counted)) or 'none'}")
    if left:
        text += (f". Declared but not counted, as their seeds cannot reach p < {left[0].alpha:g} even all of one "
                 f"sign: {', '.join(f'{name(c)}, {c.n_seeds} seeds' for c in left)}")
    unregistered = sorted({c.model for c in comparisons if c.primary and not c.registered}, key=str)
    if unregistered:
        text += f". Not declared in the family, matched on N by default: {', '.join(map(str, unregistered))}"
    return text + "."
