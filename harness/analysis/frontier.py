"""The bytes-vs-drop frontier per model, and last-N against the other selections at matched bytes. Pure.

Issue 17, item 4: does a sensitivity-guided selection (order ``sensitivity``) or a mixed INT8/INT4 plan
(order ``mixed``) buy a smaller drop than quantizing the last N units, for the same weight bytes? Issue 32,
item c: the literature's default (``ends8``: first and last unit W8, the rest W4; one point, bytes fixed by
the architecture) against last-N at each width and against each seed's mixed plans, matched alike.

Points, per (model, method): one per (selection, bit width, N) for ``last``, ``first`` and
``sensitivity``, and one per budget for ``mixed`` (its ``n`` is the budget in bytes, its bit width
ignored). Its y is the seed-mean drop with the seed-level 95% t interval (``seedstats.mean_interval``).
Its x is the measured ``weight_bytes``:
- ``last`` and ``first``: fixed by the architecture, the same for every seed; seeds (or repeated runs)
  that disagree make the point an error, listed and left out, never averaged.
- ``sensitivity`` and ``mixed`` (``PER_SEED_BYTES``): each seed has its own pre-trained model, so its
  own scores, units and bytes. The point keeps each seed's bytes (``seed_bytes``; the plot shows their
  min–max as a horizontal bar) and sits at their seed mean; only the repeated runs of one seed that
  disagree on bytes make it an error. A seed with a drop but no bytes is in y, not in the matching.
Records that did not measure a drop (status not passed/failed, or no finite drop) are skipped and
counted; a ``failed`` record broke a threshold but measured its drop and bytes, and counts as measured.

Matched bytes: per seed, the last-N drops of that seed at one bit width form a curve in weight bytes;
each seed of a point is matched at *its own* bytes by linear interpolation between the two last-N
points of that seed that bracket them, never by extrapolation (outside its last-N byte range a seed has
no matched last-N point). ``sensitivity`` is matched with last-N at its own bit width; ``mixed`` with
last-N at every bit width measured, each a comparison of its own ("vs last-N W8", "vs last-N W4")
where it brackets. Points at N = 0 or N = units_total quantize the same units as last-N and are left
out of the tests; so is a seed's run with exactly last-N's units and bytes (frontier_match, counted). ``first`` is plotted but not tested here: last vs first is ``order_test``'s, and
leaving it out keeps the Holm family to the two selections the frontier is about.

Test (as ``order_test``: seeds are the unit of replication): per (model, method, selection, bit width,
last-N width), each seed's value is the mean over the selection's matched points of
drop_selection − drop_last-N(interpolated); over seeds: the mean, its 95% t interval, the exact
two-sided sign-flip p, Holm's adjustment over every comparison of the run (``for_report``: of the
models with sensitivity or mixed records), and the verdict: "<selection> beats last-N at matched
bytes" when the adjusted p < alpha and the mean is negative, "last-N beats <selection>" when positive,
"too few pairs (k < needed)" when even the same sign in every seed could not reach alpha after Holm
(``order_test``'s rule: 3 seeds reach p = 0.25 at best, so a 3-seed run never gets a verdict), else
"no significant difference (k pairs)". Seeds that bracket no point of a comparison drop out of it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Iterable, Optional

import numpy as np

from harness.analysis.frontier_match import (by_seed, bytes_problem, interpolate, same_as,  # noqa: F401 (interpolate: API)
                                             unit_sets)
from harness.results import seedstats

SELECTIONS = ("last", "first", "sensitivity", "mixed", "ends8")
COMPARED = ("sensitivity", "mixed", "ends8")  # the Holm family; first-N is order_test's
PER_SEED_BYTES = ("sensitivity", "mixed")  # bytes may differ between seeds (their own models)
PLANS = ("mixed", "ends8")  # a width per unit: no bit width of their own, compared with last-N at every width
NAMES = {"last": "last-N", "first": "first-N", "sensitivity": "sensitivity-N", "mixed": "mixed",
         "ends8": "ends8 (first+last W8, rest W4)"}
TOO_FEW = "too few pairs"
NO_DIFFERENCE = "no significant difference"
NO_MATCH = "no matched last-N point"


def interval_text(mean: float, low: float, high: float) -> str:
    """"+0.12 [-0.03, +0.27]"; the mean alone with one value (no interval), "–" with none."""
    if math.isnan(mean):
        return "–"
    return f"{mean:+.2f}" if math.isnan(low) else f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"


@dataclass(frozen=True)
class Point:
    model: str
    method: str
    selection: str  # last, first, sensitivity, mixed
    bits: Optional[int]  # None for mixed
    n: int  # N units, or the budget in bytes for mixed
    weight_bytes: Optional[float]  # the x: seed mean for PER_SEED_BYTES; None on an error (see problem)
    seed_drops: tuple  # ((seed, drop pp), ...), repeated runs of one seed averaged
    skipped: int  # records of this point that measured nothing
    units_total: Optional[int] = None
    problem: str = ""
    seed_bytes: tuple = ()  # ((seed, weight bytes), ...) of the seeds whose records have bytes
    # the latency axis: median over the measured runs of the batch-1 LiteRT ratio quantized/control
    # (harness/case/latency.py); None when no run of the point was timed
    latency_ratio: Optional[float] = None

    def bytes_of(self, seed) -> Optional[float]:
        """The weight bytes this seed's drop was measured at: its own for PER_SEED_BYTES, else the
        point's (one value for every seed); None on an error point or a seed without bytes."""
        if self.weight_bytes is None or self.selection not in PER_SEED_BYTES:
            return self.weight_bytes
        return dict(self.seed_bytes).get(seed)

    @property
    def bytes_range(self) -> tuple:
        """(min, max) of the seeds' bytes; (x, x) when they agree, (None, None) on an error point."""
        sizes = [b for _, b in self.seed_bytes] or [self.weight_bytes]
        return (None, None) if self.weight_bytes is None else (min(sizes), max(sizes))

    @property
    def bytes_text(self) -> str:
        """"66,000", or "66,032 (65,000–67,000)" when the seeds differ; "–" on an error point."""
        low, high = self.bytes_range
        if low is None:
            return "–"
        return f"{self.weight_bytes:,.0f}" + ("" if low == high else f" ({low:,}–{high:,})")

    @property
    def seeds(self) -> int:
        return len(self.seed_drops)

    @property
    def interval(self) -> tuple:
        """(mean, low, high) of the drop over seeds."""
        return seedstats.mean_interval([d for _, d in self.seed_drops])

    @property
    def label(self) -> str:
        if self.selection == "mixed":  # the case id's budget tag (spec.config.budget_tag): b150k
            return f"mixed b{self.n // 1000}k" if self.n % 1000 == 0 else f"mixed b{self.n}"
        if self.selection == "ends8":
            return "ends8"
        return f"{NAMES[self.selection]} N={self.n} W{self.bits}"

    @property
    def same_as_last(self) -> bool:
        """first/sensitivity at N = 0 or all units quantize exactly the last-N units."""
        return self.selection in ("first", "sensitivity") and (
            self.n <= 0 or (self.units_total is not None and self.n >= self.units_total))


@dataclass(frozen=True)
class Matched:
    point: Point
    last_bits: int  # 0 when matched against the mixed plans
    pairs: tuple  # ((seed, drop of the point, interpolated last-N drop), ...) for seeds that bracket
    identical: int = 0  # seeds left out: their run quantized exactly last-N's units (frontier_match)
    against: str = "last"  # "last": that seed's last-N curve; "mixed": its mixed plans' curve (ends8 only)

    @property
    def against_name(self) -> str:
        return "mixed" if self.against == "mixed" else f"last-N W{self.last_bits}"

    @property
    def diffs(self) -> list:
        return [d - last for _, d, last in self.pairs]

    @property
    def last_interval(self) -> tuple:
        return seedstats.mean_interval([last for _, _, last in self.pairs])

    @property
    def diff_interval(self) -> tuple:
        return seedstats.mean_interval(self.diffs)


@dataclass(frozen=True)
class Comparison:
    model: str
    method: str
    selection: str
    bits: Optional[int]  # the selection's bit width (None: mixed)
    last_bits: int
    matched: tuple  # Matched, one per tested point (with or without pairs)
    seed_values: tuple  # ((seed, mean diff over its matched points, points), ...)
    mean_diff: float
    low: float
    high: float
    p_value: float
    p_holm: float = math.nan
    best_p_holm: float = 1.0
    tests_in_family: int = 0
    alpha: float = 0.05
    verdict: str = TOO_FEW
    against: str = "last"  # or "mixed": ends8 against the mixed plans' curve at matched bytes

    @property
    def pairs(self) -> int:
        return len(self.seed_values)

    @property
    def name(self) -> str:
        own = f" W{self.bits}" if self.bits is not None else ""
        return f"{NAMES[self.selection]}{own} vs " + ("mixed" if self.against == "mixed" else f"last-N W{self.last_bits}")

    @property
    def other(self) -> str:
        """What the point is set against: "last-N" or "mixed"."""
        return "mixed" if self.against == "mixed" else "last-N"

    def sentence(self) -> str:
        head = f"{self.model} {self.method} {self.name}"
        if not self.pairs:
            return f"{head}: no matched {self.other} point: no seed's point lies within its {self.other} byte range"
        text = (f"{head}: drop − {self.other} drop at matched bytes {interval_text(self.mean_diff, self.low, self.high)} pp "
                f"(per-seed mean over {self.n_points} matched points, "
                f"{self.pairs} pairs; sign-flip p = {self.p_value:.3g}, Holm-adjusted {self.p_holm:.3g}): "
                f"{self.verdict}")
        if self.identical:
            text += f"; {self.identical} points compared identical unit sets, excluded"
        if self.verdict.startswith(TOO_FEW):
            text += (f", since even the same sign in all {self.pairs} seeds gives at best {self.best_p_holm:.3g} "
                     f"after Holm over {self.tests_in_family} tests, not < {self.alpha:g}")
        return text

    @property
    def n_points(self) -> int:
        return sum(1 for m in self.matched if m.pairs)

    @property
    def identical(self) -> int:
        """Matched points (seed x point) left out for comparing identical unit sets."""
        return sum(m.identical for m in self.matched)


@dataclass(frozen=True)
class Frontier:
    model: str
    method: str
    points: tuple  # Point, every one (errors included)
    comparisons: tuple  # Comparison

    @property
    def skipped(self) -> int:
        return sum(p.skipped for p in self.points)

    @property
    def problems(self) -> list:
        return [f"{p.label}: {p.problem}" for p in self.points if p.problem]


def for_report(records: Iterable[dict], alpha: float = 0.05) -> tuple:
    """``analyse`` of the models that have sensitivity or mixed records (the family Holm runs over);
    () when none has: a plain last/first run gets no frontier."""
    records = list(records)
    models = {r.get("model") for r in records if r.get("order") in COMPARED}
    return analyse([r for r in records if r.get("model") in models], alpha) if models else ()


def _point_key(record: dict) -> Optional[tuple]:
    order = record.get("order")
    if order not in SELECTIONS or record.get("n") is None:
        return None
    bits = None if order in PLANS else record.get("weight_bits")
    return (record.get("model"), record.get("method") or "qat", order, bits, int(record["n"]))


def _make_point(key: tuple, rows: list) -> Point:
    measured = [(r, seedstats.drop_of(r)) for r in rows]
    measured = [(r, d) for r, d in measured if d is not None]
    drops = tuple((s, float(np.mean(v))) for s, v in by_seed((r.get("seed"), d) for r, d in measured))
    sized = [(r.get("seed"), seedstats.as_number(r.get("weight_bytes"))) for r, _ in measured]
    seed_sizes = by_seed((seed, int(b)) for seed, b in sized if b is not None)
    totals = [int(r["units_total"]) for r in rows if r.get("units_total") is not None]
    problem = bytes_problem(key[2] in PER_SEED_BYTES, seed_sizes) if measured else ""
    seed_bytes = () if problem else tuple((s, sizes[0]) for s, sizes in seed_sizes)
    x = None
    if seed_bytes:
        x = float(np.mean([b for _, b in seed_bytes])) if key[2] in PER_SEED_BYTES else seed_bytes[0][1]
    ratios = [v for v in (seedstats.as_number(r.get("latency_ratio")) for r, _ in measured) if v is not None]
    return Point(*key, weight_bytes=x, seed_drops=drops, skipped=len(rows) - len(measured),
                 units_total=max(totals) if totals else None, problem=problem, seed_bytes=seed_bytes,
                 latency_ratio=float(np.median(ratios)) if ratios else None)


def frontier_points(records: Iterable[dict]) -> list:
    """Every point of every (model, method), sorted; see the module docstring."""
    groups = defaultdict(list)
    for r in records:
        key = _point_key(r)
        if key is not None:
            groups[key].append(r)
    points = [_make_point(key, rows) for key, rows in groups.items()]
    return sorted(points, key=lambda p: (str(p.model), str(p.method), SELECTIONS.index(p.selection),
                                         -(p.bits or 0), p.n))


def _last_curves(points: list, selection: str = "last") -> dict:
    """{(model, method, bits): {seed: ([bytes], [drop])}} from the usable points of ``selection`` (last-N;
    or mixed, bits None, each seed at its own bytes)."""
    curves = defaultdict(lambda: defaultdict(lambda: ([], [])))
    for p in points:
        if p.selection == selection and p.weight_bytes is not None:
            for seed, drop in p.seed_drops:
                if p.bytes_of(seed) is not None:
                    xs, ys = curves[(p.model, p.method, p.bits)][seed]
                    xs.append(p.bytes_of(seed))
                    ys.append(drop)
    return curves


def match(point: Point, curve: dict, last_bits: int, units: Optional[dict] = None, against: str = "last") -> Matched:
    """Pair each seed of ``point`` with that seed's last-N (or mixed, ``against``) drop interpolated at that
    seed's own bytes (``Point.bytes_of``); a seed whose run has the very units and bytes of one of those
    runs (``units``: frontier_match.unit_sets) is left out and counted, its difference 0 by construction."""
    pairs, identical = [], 0
    for seed, drop in point.seed_drops:
        other = ("mixed", None) if against == "mixed" else ("last", last_bits)
        if units and same_as(units, point, seed, *other):
            identical += 1
            continue
        size = point.bytes_of(seed)
        if seed in curve and size is not None:
            last = interpolate(*curve[seed], size)
            if last is not None:
                pairs.append((seed, drop, last))
    return Matched(point, last_bits, tuple(pairs), identical, against)


def _raw_comparison(key: tuple, matched: list) -> Comparison:
    model, method, selection, bits, last_bits, against = key
    per_seed = defaultdict(list)
    for m in matched:
        for (seed, _, _), diff in zip(m.pairs, m.diffs):
            per_seed[seed].append(diff)
    values = tuple((s, float(np.mean(v)), len(v)) for s, v in sorted(per_seed.items(), key=lambda kv: str(kv[0])))
    mean, low, high = seedstats.mean_interval([v for _, v, _ in values])
    p = seedstats.sign_flip_p([v for _, v, _ in values]) if values else math.nan
    return Comparison(model, method, selection, bits, last_bits, tuple(matched), values, mean, low, high, p,
                      against=against)


def _comparisons_of(points: list, units: Optional[dict] = None) -> list:
    curves, plans = _last_curves(points), _last_curves(points, "mixed")
    groups = defaultdict(list)
    for p in points:
        if p.selection not in COMPARED or p.same_as_last or p.weight_bytes is None:
            continue  # same units as last-N, or an error point (listed in Frontier.problems)
        widths = sorted({b for (mo, me, b) in curves if (mo, me) == (p.model, p.method)}, reverse=True)
        for last_bits in (widths if p.selection in PLANS else [p.bits]):
            curve = curves.get((p.model, p.method, last_bits))
            if curve is not None:
                groups[(p.model, p.method, p.selection, p.bits, last_bits, "last")].append(match(p, curve, last_bits, units))
        if p.selection == "ends8" and (p.model, p.method, None) in plans:  # and against the mixed plans
            groups[(p.model, p.method, p.selection, None, 0, "mixed")].append(
                match(p, plans[(p.model, p.method, None)], 0, units, "mixed"))
    return [_raw_comparison(key, matched) for key, matched in groups.items()]


def pairs_needed(family: int, alpha: float) -> int:
    """The fewest seeds whose sign-flip p can get below alpha after Holm over ``family`` tests."""
    k = 1
    while seedstats.best_holm_p(k, family) >= alpha:
        k += 1
    return k


def _verdict(c: Comparison, p_holm: float, family: int, alpha: float) -> Comparison:
    best = seedstats.best_holm_p(c.pairs, family) if c.pairs else 1.0
    if not c.pairs:  # no seed's point lies within the other curve's bytes: no test at any number of seeds
        verdict = f"no matched {c.other} point (outside its byte range)"
    elif best >= alpha:
        verdict = f"{TOO_FEW} ({c.pairs} < {pairs_needed(family, alpha)})"
    elif p_holm < alpha:
        verdict = (f"{NAMES[c.selection]} beats {c.other} at matched bytes" if c.mean_diff < 0
                   else f"{c.other} beats {NAMES[c.selection]}")
    else:
        verdict = f"{NO_DIFFERENCE} ({c.pairs} pairs)"
    return replace(c, p_holm=p_holm, best_p_holm=best, tests_in_family=family, alpha=alpha, verdict=verdict)


def analyse(records: Iterable[dict], alpha: float = 0.05) -> tuple:
    """One Frontier per (model, method) that has points; Holm over every comparison of the run."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    records = list(records)
    points = frontier_points(records)
    raw = _comparisons_of(points, unit_sets(records))
    adjusted = seedstats.holm([c.p_value for c in raw])
    family = sum(not math.isnan(c.p_value) for c in raw)
    tested = [_verdict(c, p, family, alpha) for c, p in zip(raw, adjusted)]
    out = []
    for model, method in sorted({(p.model, p.method) for p in points}, key=lambda k: tuple(map(str, k))):
        mine = [c for c in tested if (c.model, c.method) == (model, method)]
        mine.sort(key=lambda c: (COMPARED.index(c.selection), -(c.bits or 0), c.against == "mixed", -c.last_bits))
        out.append(Frontier(model, method, tuple(p for p in points if (p.model, p.method) == (model, method)),
                            tuple(mine)))
    return tuple(out)


def verdict(frontiers: Iterable[Frontier], model: str) -> str:
    """One sentence for a model: each sensitivity-N, mixed and ends8 comparison's matched-bytes difference
    and verdict."""
    headline = [c for f in frontiers if f.model == model for c in f.comparisons]
    if not headline:
        return f"**{model}** frontier: no sensitivity-N, mixed or ends8 point to set against last-N."
    parts = [f"{c.method.upper()} {c.name}: {c.verdict}" if not c.pairs else
             f"{c.method.upper()} {c.name} {interval_text(c.mean_diff, c.low, c.high)} pp "
             f"({c.pairs} seeds, Holm-adjusted p = {c.p_holm:.2g}): {c.verdict}" for c in headline]
    tested = [c for c in headline if c.pairs]
    if tested and all(c.verdict.startswith(TOO_FEW) for c in tested):
        lead = (f"too few pairs to tell at matched weight bytes (the exact sign-flip test needs "
                f"{pairs_needed(tested[0].tests_in_family, tested[0].alpha)} seeds after Holm over "
                f"{tested[0].tests_in_family} tests); measured, ")
    elif tested and all(c.verdict.startswith((TOO_FEW, NO_DIFFERENCE)) for c in tested):
        lead = "at matched weight bytes no selection differs significantly from what it is set against; "
    else:
        lead = "at matched weight bytes, "
    return f"**{model}** frontier: {lead}drop minus the drop it is set against: " + "; ".join(parts) + "."
