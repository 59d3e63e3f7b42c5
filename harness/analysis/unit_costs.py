"""What each unit costs alone (``single`` order) and each kind of unit (``type`` order). Pure (numpy).

Issue 32, item (a) and the seed report's hypothesis: position against layer identity. Per (model, weight
bits, method) group and per unit (or kind), one value per seed, the tie-aware drop (seeds are the unit of
replication, ``seedstats``):

- the seed mean with its 95% t interval, and the exact two-sided sign-flip p against 0;
- one family per group: Holm over its units (a group asks "which of these units costs anything?");
- the effect the group's seeds could detect: 80% power at Holm's first level (alpha / units), for the
  pooled seed-to-seed SD of the group's units (``seed_power.detectable_effect``), beside the issue's
  targets (0.2 pp at W8, 0.5 pp at W4). Whether a unit "costs nothing detectable" is only as strong as that.

For kinds (``type``), the per-seed differences between every two kinds (e.g. attention - ffn) are tested the
same way, Holm over the pairs of the group: the seed report claims early and middle layers such as attention
cost more than the final ones.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Iterable, Optional

from harness.analysis import seed_power
from harness.results import seedstats

ALPHA = 0.05
TARGET_PP = {8: 0.2, 4: 0.5}  # issue 32: the detectable effect the single-unit costs should reach
ORDERS = ("single", "type")


@dataclass(frozen=True)
class Cost:
    """One unit's (or kind's, or pair of kinds') per-seed drops, summarised."""

    label: str  # "c1_conv (unit 0, 288 weights)", "attention", "attention - ffn"
    values: tuple  # one per seed, pp
    p_holm: float = math.nan
    unit: Optional[int] = None  # single order: the unit's index in graph order (0 is the first unit)

    @property
    def seeds(self) -> int:
        return len(self.values)

    @property
    def interval(self) -> tuple:
        return seedstats.mean_interval(self.values)

    @functools.cached_property  # the verdict, the table and Holm all read it
    def p(self) -> float:
        return seedstats.sign_flip_p(self.values) if self.seeds else math.nan

    @property
    def detected(self) -> bool:
        return self.p_holm < ALPHA

    def text(self) -> str:
        mean, low, high = self.interval
        span = f"[{low:+.2f}, {high:+.2f}]" if not math.isnan(low) else "(1 seed)"
        return f"{self.label} {mean:+.2f} pp {span} (Holm p {self.p_holm:.2g})"


@dataclass(frozen=True)
class GroupCosts:
    model: str
    weight_bits: int
    method: str
    order: str  # "single" or "type"
    costs: tuple  # of Cost, graph order (single) or kind order (type)
    sd: float  # pooled seed-to-seed SD of the units' drops, pp
    detectable_pp: float  # at 80% power and Holm's first level over the group's units; inf: too few seeds
    differences: tuple = ()  # type order: Cost per pair of kinds
    final_kind: Optional[str] = None  # kind of the model's last unit (type order: the seed report's "final layers")

    @property
    def head(self) -> str:
        return f"{self.model} W{self.weight_bits} {self.method.upper()}"

    @property
    def seeds(self) -> int:
        return min((c.seeds for c in self.costs), default=0)


def _label(record: dict, order: str) -> Optional[tuple]:
    """(sort key, label) of the unit or kind a record quantizes alone; None when it is not one."""
    if order == "type":
        kind = record.get("kind")
        return None if kind is None else (str(kind), str(kind))
    n = record.get("n")
    if not isinstance(n, int):
        return None
    table = {u.get("index"): u for u in record.get("unit_table") or () if isinstance(u, dict)}
    unit = table.get(n, {})
    name = unit.get("weight_layer") or (unit.get("members") or [f"unit {n}"])[0]
    params = unit.get("kernel_params")
    weights = f", {params:,} weights" if isinstance(params, int) else ""
    return n, f"{name} (unit {n}{weights})"


def _final_kind(record: dict) -> Optional[str]:
    units = [u for u in record.get("unit_table") or () if isinstance(u, dict) and isinstance(u.get("index"), int)]
    return str(max(units, key=lambda u: u["index"]).get("kind")) if units else None


def _with_holm(costs: list) -> tuple:
    adjusted = seedstats.holm([c.p for c in costs])
    return tuple(replace(c, p_holm=p) for c, p in zip(costs, adjusted))


@functools.lru_cache(maxsize=None)
def _standardized_detectable(seeds: int, family: int) -> float:
    # the power depends on effect / SD only (seed_power's docstring): simulate once per (seeds, family)
    return seed_power.detectable_effect(seeds, 1.0, ALPHA, family)


def _detectable(per_unit: list, family: int) -> tuple:
    sd, _dof = seedstats.pooled_sd([c.values for c in per_unit])
    seeds = min((c.seeds for c in per_unit), default=0)
    if not seeds or math.isnan(sd) or sd <= 0:
        return sd, math.inf
    return sd, _standardized_detectable(seeds, family) * sd


def _differences(per_seed: dict, kinds: list) -> tuple:
    pairs = []
    for a, b in itertools.combinations(kinds, 2):
        seeds = sorted(set(per_seed[a]) & set(per_seed[b]), key=str)
        pairs.append(Cost(f"{a} - {b}", tuple(per_seed[a][s] - per_seed[b][s] for s in seeds)))
    return _with_holm(pairs) if pairs else ()


def group_costs(records: Iterable[dict]) -> list:
    """GroupCosts of every (model, bits, method, order) with single or type records."""
    cells = defaultdict(lambda: defaultdict(dict))  # group -> (sort key, label) -> seed -> [drops]
    final = {}
    for r in records:
        order, drop = r.get("order"), seedstats.drop_of(r)
        label = _label(r, order) if order in ORDERS else None
        if drop is None or label is None:
            continue
        group = (r.get("model"), r.get("weight_bits"), r.get("method") or "qat", order)
        cells[group][label].setdefault(r.get("seed"), []).append(drop)
        final[group] = final.get(group) or _final_kind(r)
    out = []
    for group in sorted(cells, key=lambda g: tuple(str(p) for p in g)):
        units = sorted(cells[group], key=lambda k: (str(type(k[0])), k[0]))
        per_seed = {label: {s: sum(v) / len(v) for s, v in cells[group][(key, label)].items()} for key, label in units}
        costs = _with_holm([Cost(label, tuple(per_seed[label][s] for s in sorted(per_seed[label], key=str)),
                                 unit=key if group[3] == "single" else None) for key, label in units])
        sd, detectable = _detectable(list(costs), len(costs))
        differences = _differences(per_seed, [label for _k, label in units]) if group[3] == "type" else ()
        out.append(GroupCosts(*group, costs=costs, sd=sd, detectable_pp=detectable, differences=differences,
                              final_kind=final.get(group)))
    return out


def _power_text(g: GroupCosts) -> str:
    target = TARGET_PP.get(g.weight_bits)
    if math.isinf(g.detectable_pp):
        return f"{g.seeds} seed(s) cannot reach significance after Holm over {len(g.costs)}: too few seeds"
    goal = "" if target is None else (f", within the {target:g} pp target" if g.detectable_pp <= target
                                      else f", NOT within the {target:g} pp target")
    return (f"detectable at 80% power: {g.detectable_pp:.2f} pp (seed SD {g.sd:.2f} pp, {g.seeds} seeds, "
            f"Holm over {len(g.costs)}){goal}")


def verdict(g: GroupCosts) -> str:
    """One sentence that claims only what the group's data support."""
    what = "each unit alone" if g.order == "single" else "each kind of unit"
    found = [c for c in g.costs if c.detected]
    rest = [c for c in g.costs if not c.detected]
    parts = [f"{c.text()}" for c in found]
    if rest:
        means = [c.interval[0] for c in rest]
        none = "nothing detectable" if not math.isinf(g.detectable_pp) else "not testable"
        parts.append(f"{'the other ' if found else ''}{len(rest)} {'unit' if g.order == 'single' else 'kind'}"
                     f"{'s' if len(rest) != 1 else ''}: {none} (seed means {min(means):+.2f} to {max(means):+.2f} pp)")
    text = f"{g.head}, {what}: " + "; ".join(parts) + f" — {_power_text(g)}."
    if g.differences:
        text += " Between kinds: " + "; ".join(c.text() + (" *" if c.detected else "") for c in g.differences) + "."
    return text + hypothesis(g)


@dataclass(frozen=True)
class Claim:
    """The seed report's claim tested in one type group: attention minus the final layer's kind."""

    final: str
    mean: float
    low: float
    high: float
    p_holm: float
    result: str

    @property
    def span(self) -> str:
        return f"[{self.low:+.2f}, {self.high:+.2f}]" if not math.isnan(self.low) else "(1 seed)"


def claim(g: GroupCosts) -> Optional[Claim]:
    """The seed report's claim, where the group can test it: quantizing attention (early and middle layers)
    costs more than quantizing the final layer (the model's last unit's kind, e.g. the head)."""
    final = g.final_kind
    if final in (None, "attention") or not g.differences:
        return None
    pair = next((c for c in g.differences if c.label in (f"attention - {final}", f"{final} - attention")), None)
    if pair is None:
        return None
    sign = 1.0 if pair.label.startswith("attention") else -1.0
    mean, low, high = (sign * v for v in pair.interval)
    if sign < 0:
        low, high = high, low
    if not pair.detected:
        result = "not supported: no detectable difference" if not math.isinf(g.detectable_pp) else "not testable: too few seeds"
    else:
        result = "supported" if mean > 0 else "contradicted: the final layer costs more"
    return Claim(final, mean, low, high, pair.p_holm, result)


def hypothesis(g: GroupCosts) -> str:
    c = claim(g)
    if c is None:
        return ""
    return (f" The seed report's claim that attention costs more than the final layer ({c.final}): attention - {c.final} "
            f"{c.mean:+.2f} pp {c.span}, Holm p {c.p_holm:.2g}: {c.result}.")


def section(records: Iterable[dict]) -> list:
    """Markdown lines: a table per group and its verdict; [] without single or type records."""
    groups = group_costs(records)
    if not groups:
        return []
    lines = ["## What each unit costs alone (single) and each kind (type)", "",
             "Per seed the tie-aware drop; per unit the seed mean with its 95% t interval, the exact sign-flip "
             "p against 0, Holm over the units of the group; the detectable effect is the smallest true cost "
             "the group's seeds find with 80% power at Holm's first level (harness/analysis/unit_costs.py).", ""]
    for g in groups:
        lines += [f"### {g.head} · {g.order}", "", f"- {verdict(g)}", "",
                  "| unit | seeds | drop pp: mean [95% t] | sign-flip p | Holm p |", "|---|---|---|---|---|"]
        for c in g.costs + g.differences:
            mean, low, high = c.interval
            span = f"[{low:+.2f}, {high:+.2f}]" if not math.isnan(low) else ""
            lines.append(f"| {c.label} | {c.seeds} | {mean:+.2f} {span} | {c.p:.3g} | {c.p_holm:.3g} |")
        lines.append("")
    return lines


def verdicts(records: Iterable[dict]) -> list:
    return [verdict(g) for g in group_costs(records)]
