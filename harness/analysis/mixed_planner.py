"""The planner's mixed answer: float, INT8 or INT4 per unit within a weight-bytes budget, with its
calibrated accuracy drop. Pure (numpy/scipy).

``python -m harness plan --results RUN --size-budget BYTES [--budget PP]`` (or ``--order mixed``). The plan
is harness.design.mixed.mixed_plan (exact) over the unit table and the HAWQ-V2 scores that a run's records
hold: this module computes no score. The scores are those of one pre-trained float model, taken from
(in this order) a ``mixed`` case's ``mixed_plan`` (scores at 8 and 4 bits), or two ``sensitivity``
cases at 8 and at 4 bits of the same pre-trained model; the lowest seed's pre-trained model when a
tier pre-trains per seed. The answer says which records and which pre-trained model they came from,
and prints the pytest command that runs that plan as a case (it re-solves the plan from its own
pre-trained model's scores: the same plan when that model is the one named).

Predicted drop (pp). A score predicts a loss increase, not pp, so the run's measurements calibrate it:
each measured QAT case of the model whose quantized units have scores of its own pre-trained model (its
``sensitivity``/``mixed_plan`` field, else that model's recorded scores, matched by the control's cache
key, else by seed) is a point: cost = summed score of its quantized units at their widths, drop = its
accuracy_drop_pp (repeats of one selection at one seed averaged). Model: drop = a * cost through the
origin (cost 0, nothing quantized, no drop), one slope for all widths: the score carries the width (its
noise power), a mixed plan mixes widths, and W8 costs are ~300x below W4 ones with drops within the
noise, so a W8-only slope is undetermined. Seeds are the unit of replication: a is the mean of the
per-seed least-squares slopes, with a t interval over seeds (k - 1 df). The plan's drop: a * cost with
the 95% prediction interval of one run, t(k - 1) * sqrt((cost * se(a))^2 + s^2), s^2 one run's scatter
(residual mean square, floored by a paired drop's binomial variance; k - 1 df for it too: conservative).
Needs two cases and two seeds, else says why. Leave-one-seed-out RMS error beside predicting 0's.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
from scipy import stats

from harness.analysis.drop_fit import units_from_records
from harness.analysis.plan import check_budget
from harness.results.records import MEASURED
from harness.results.seedstats import drop_of, sampling_var_pp2
from harness.design import mixed
from harness.design.config import MAX_BUDGET_BYTES, MIXED_BITS, PLAN_ORDERS, Case, QuantConfig, Selection

CONFIDENCE = 0.95
SCAN_STEPS = 8  # larger budgets tried, geometrically up to the float bytes, when a plan misses --budget


@dataclass(frozen=True)
class Scores:
    """Per-unit costs of one pre-trained model at MIXED_BITS, and where they came from."""

    model: str
    tier: str
    seed: int
    costs: dict  # bits -> cost per unit, graph order (negative scores clipped to 0)
    pretrained_key: str
    source: str  # which records, which method


@dataclass(frozen=True)
class ScoreSet:
    """The scores one pre-trained model has in the records (a mixed case's, or its sensitivity cases')."""

    seed: int
    key: str  # the pre-trained model's cache key
    costs: dict  # bits -> cost per unit, graph order, negative scores clipped to 0
    source: str
    meta: dict  # method, probes, examples of the scores


def _clipped(rows: list, score) -> Optional[list]:
    try:
        return [max(0.0, float(score(u))) for u in sorted(rows, key=lambda u: u["index"])]
    except (KeyError, TypeError, ValueError):
        return None


def _from_mixed(record: dict) -> Optional[dict]:
    rows = record["mixed_plan"].get("units") or []
    costs = {b: _clipped(rows, lambda u, b=b: u["score"][str(b)]) for b in MIXED_BITS}
    return costs if rows and all(c is not None for c in costs.values()) else None


def _seed(record: dict) -> int:
    return int(record.get("seed") or 0)


def score_sets(records: Sequence[dict], model: str) -> list:
    """Every ScoreSet of ``model``: one per mixed record, one per pre-trained key of sensitivity records."""
    found, by_key = [], defaultdict(list)
    for r in records:
        if r.get("model") != model:
            continue
        plan, field = r.get("mixed_plan"), r.get("sensitivity")
        costs = _from_mixed(r) if isinstance(plan, dict) else None
        if costs:
            meta = plan.get("scores") or {}
            found.append(ScoreSet(_seed(r), meta.get("pretrained_key"), costs, f"mixed_plan of {r.get('case_id')}", meta))
        if isinstance(field, dict) and field.get("units") and field.get("bits") in MIXED_BITS:
            by_key[field.get("pretrained_key")].append(r)
    for key, group in by_key.items():
        costs = {r["sensitivity"]["bits"]: _clipped(r["sensitivity"]["units"], lambda u: u["score"]) for r in group}
        ids = sorted(str(r.get("case_id")) for r in group)
        found.append(ScoreSet(min(map(_seed, group)), key, {b: c for b, c in costs.items() if c is not None},
                              f"sensitivity of {', '.join(ids[:2])}", group[0]["sensitivity"]))
    return found


def scores_from_records(records: Sequence[dict], model: str) -> Scores:
    """The scores the plan uses (see the module docstring); ValueError saying what to run when none."""
    found = [s for s in score_sets(records, model) if all(b in s.costs for b in MIXED_BITS)]
    if not found:
        raise ValueError(f"no sensitivity scores at {' and '.join(map(str, MIXED_BITS))} bits for {model!r} in "
                         f"these records: run its mixed cases (pytest benchmarks --qat-models {model} "
                         f"--qat-orders mixed --qat-mixed-budgets BYTES) or sensitivity cases at both widths")
    # the lowest seed's pre-trained model; a mixed case's scores before sensitivity cases' of the same seed
    best = min(found, key=lambda s: (s.seed, not s.source.startswith("mixed_plan"), s.source))
    tier = next((str(r.get("tier")) for r in records if r.get("model") == model and r.get("tier")), "smoke")
    meta = best.meta
    how = (f"HAWQ-V2 scores ({meta.get('method', '?')}, {meta.get('probes', '?')} probes, "
           f"{meta.get('examples', '?')} training examples) of the pre-trained float model {best.key} "
           f"(seed {best.seed}), from the {best.source}")
    return Scores(model, tier, best.seed, best.costs, str(best.key), how)


@dataclass(frozen=True)
class Point:
    """One measured selection of one seed: its predicted cost and measured drop (pp)."""

    seed: int
    cost: float
    drop: float  # mean over the runs of this selection at this seed
    order: str
    sampling_var: Optional[float]  # binomial variance of the paired drop, pp^2


def _quantized(record: dict) -> Optional[dict]:
    """{unit index: bits} of what the case quantized; None when the record does not say."""
    plan = record.get("mixed_plan")
    if record.get("order") in PLAN_ORDERS and isinstance(plan, dict):  # mixed and ends8: a width per unit
        return {int(u["index"]): int(u["choice"]) for u in plan.get("units") or [] if u.get("choice") != mixed.FLOAT}
    units, bits = record.get("units_selected"), record.get("weight_bits")
    if not isinstance(units, list) or not isinstance(bits, int):
        return None
    return {int(i): bits for i in units}


def _costs_of(record: dict, table: dict, seeds: dict) -> tuple:
    """(pre-trained key, {bits: costs}) of the record's own pre-trained model, or (None, None)."""
    planned = _from_mixed(record) if isinstance(record.get("mixed_plan"), dict) else None
    if planned:
        return (record["mixed_plan"].get("scores") or {}).get("pretrained_key"), planned
    field, control = record.get("sensitivity"), str(record.get("control_key") or "")
    own = [field.get("pretrained_key")] if isinstance(field, dict) and field.get("pretrained_key") in table else []
    keys = own or [k for k in table if control.startswith(f"{k}-")] or seeds.get(_seed(record), [])
    return (keys[0], table[keys[0]]) if len(keys) == 1 else (None, None)


def calibration_points(records: Sequence[dict], model: str, method: str = "qat") -> tuple:
    """The Points of ``model``'s measured ``method`` cases whose quantized units have scores."""
    table, seeds = defaultdict(dict), defaultdict(list)
    for s in score_sets(records, model):
        table[s.key].update(s.costs)
        seeds[s.seed] += [s.key] if s.key not in seeds[s.seed] else []
    cells = defaultdict(list)
    for r in records:
        drop = drop_of(r)
        if r.get("model") != model or (r.get("method") or "qat") != method or drop is None:
            continue
        try:
            chosen = _quantized(r)
            key, costs = _costs_of(r, table, seeds)
            cost = sum(costs[b][i] for i, b in chosen.items()) if chosen else None
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if cost is not None:
            cells[(_seed(r), str(key), tuple(sorted(chosen.items())))].append((cost, drop, r.get("order"), r))
    points = []
    for (seed, _, _), runs in sorted(cells.items()):
        found = [v for v in (sampling_var_pp2(r) for *_, r in runs) if v is not None]
        points.append(Point(seed, runs[0][0], float(np.mean([d for _, d, _, _ in runs])), str(runs[0][2]),
                            float(np.mean(found)) if found else None))
    return tuple(points)


@dataclass(frozen=True)
class Calibration:
    """drop = slope * cost over seeds (see the module docstring); ``reason`` says why there is no fit."""

    points: tuple
    reason: str = ""
    slope: float = math.nan
    slope_se: float = math.nan
    seeds: int = 0
    t: float = math.nan
    scatter_sd: float = math.nan  # one run's scatter around the line, pp
    loo_rms: float = math.nan  # leave-one-seed-out RMS error, pp
    zero_rms: float = math.nan  # RMS error of predicting 0 pp

    @property
    def fitted(self) -> bool:
        return not self.reason

    @property
    def slope_interval(self) -> tuple:
        return self.slope - self.t * self.slope_se, self.slope + self.t * self.slope_se

    def predict(self, cost: float) -> tuple:
        """(drop, lower, upper) pp: the 95% prediction interval of one run at ``cost``."""
        half = self.t * math.hypot(cost * self.slope_se, self.scatter_sd)
        return self.slope * cost, self.slope * cost - half, self.slope * cost + half


def seed_slopes(points: Sequence[Point]) -> dict:
    """{seed: least-squares slope through the origin} for seeds with a case of positive cost."""
    sums = defaultdict(lambda: [0.0, 0.0])
    for p in points:
        sums[p.seed][0] += p.cost * p.drop
        sums[p.seed][1] += p.cost * p.cost
    return {seed: xy / xx for seed, (xy, xx) in sorted(sums.items()) if xx > 0}


def calibrate(points: Sequence[Point]) -> Calibration:
    """The fit, or a Calibration whose reason says why there is none (never a made-up number)."""
    points = tuple(points)
    if len(points) < 2:
        return Calibration(points, reason=f"too few measured cases to calibrate ({len(points)})")
    slopes = seed_slopes(points)
    if len(slopes) < 2:
        return Calibration(points, reason=f"too few seeds to calibrate ({len(slopes)}): the slope's interval is "
                                          "over seeds and needs two")
    values = np.array(list(slopes.values()))
    k, slope = len(values), float(values.mean())
    residuals = np.array([p.drop - slope * p.cost for p in points])
    floors = [p.sampling_var for p in points if p.sampling_var is not None]
    floor = float(np.median(floors)) if floors else 0.0  # binomial variance of one paired drop
    scatter = math.sqrt(max(float(residuals @ residuals) / (len(points) - 1), floor))
    errors = [p.drop - np.mean([v for s, v in slopes.items() if s != p.seed]) * p.cost for p in points]
    return Calibration(points, slope=slope, slope_se=float(values.std(ddof=1) / math.sqrt(k)), seeds=k,
                       t=float(stats.t.ppf(0.5 + CONFIDENCE / 2, k - 1)), scatter_sd=scatter,
                       loo_rms=float(np.sqrt(np.mean(np.square(errors)))),
                       zero_rms=float(np.sqrt(np.mean([p.drop ** 2 for p in points]))))


def describe(cal: Calibration) -> str:
    """One line: the fit and its checks, or why there is none."""
    orders = defaultdict(int)
    for p in cal.points:
        orders[p.order] += 1
    cases = f"{len(cal.points)} measured selections ({', '.join(f'{o} {n}' for o, n in sorted(orders.items()))})"
    if not cal.fitted:
        return f"no calibration: {cal.reason}; {cases}"
    low, high = cal.slope_interval
    return (f"calibration: drop = a x score, a = {cal.slope:.4g} pp per unit of score [{low:.4g}, {high:.4g}] "
            f"(mean of {cal.seeds} seeds' slopes, t with {cal.seeds - 1} df), "
            f"one run's scatter {cal.scatter_sd:.2f} pp; "
            f"{cases}; leave-one-seed-out RMS error {cal.loo_rms:.2f} pp (predicting 0: {cal.zero_rms:.2f} pp)")


@dataclass(frozen=True)
class MixedAnswer:
    scores: Scores
    units: tuple
    plan: mixed.MixedPlan
    command: str
    measured: str  # the measured drop of this case in the records, or ""
    calibration: Optional[Calibration] = None
    budget_pp: Optional[float] = None

    @property
    def case_id(self) -> str:
        return Case(self.scores.model, Selection("mixed", self.plan.budget_bytes), QuantConfig(min(MIXED_BITS))).id

    @property
    def predicted(self) -> Optional[tuple]:
        """(drop, lower, upper) pp of one run of this plan, or None without a calibration."""
        cal = self.calibration
        return cal.predict(self.plan.predicted_cost) if cal is not None and cal.fitted else None


def verify_command(scores: Scores, budget: int) -> str:
    """The pytest line that runs exactly this model's mixed case at ``budget`` for the scores' seed."""
    case_id = Case(scores.model, Selection("mixed", budget), QuantConfig(min(MIXED_BITS))).id
    return (f"pytest benchmarks -k {case_id} --qat-models {scores.model} --qat-tier {scores.tier} "
            f"--qat-orders mixed --qat-mixed-budgets {budget} --qat-seeds {scores.seed}")


def _measured(records: Iterable[dict], model: str, budget: int) -> str:
    drops = [(drop_of(r), r) for r in records if r.get("model") == model and r.get("order") == "mixed"
             and r.get("n") == budget and r.get("status") in MEASURED]
    drops = [(d, r) for d, r in drops if d is not None]
    if not drops:
        return ""
    tags = sorted({str((r.get("mixed_plan") or {}).get("tag")) for _, r in drops})
    mean = sum(d for d, _ in drops) / len(drops)
    return f"measured in these records: mean drop {mean:.2f} pp over {len(drops)} seed(s), plan tag(s) {', '.join(tags)}"


def check_size_budget(size_budget) -> int:
    """A whole, positive number of bytes (ValueError otherwise)."""
    try:
        value = float(size_budget)
    except (TypeError, ValueError):
        raise ValueError(f"size budget must be a whole number of bytes, got {size_budget!r}") from None
    if not value.is_integer() or not 1 <= value <= MAX_BUDGET_BYTES:
        raise ValueError(f"size budget must be a whole number of bytes in 1..{MAX_BUDGET_BYTES}, got {size_budget!r}")
    return int(value)


def solve(units: tuple, costs: dict, budget: int) -> mixed.MixedPlan:
    """The plan as the mixed case solves it (harness/case/mixed_case.py)."""
    return mixed.deployable_plan(units, costs, budget)


def mixed_answer(records: Sequence[dict], model: str, size_budget, budget_pp=None) -> MixedAnswer:
    """The plan of least predicted cost within ``size_budget`` weight bytes, with its calibrated drop and,
    given ``budget_pp``, whether it is within it; ValueError (one line) for a bad budget or an infeasible
    size budget, or records without a unit table or scores."""
    budget = check_size_budget(size_budget)
    if budget_pp is not None:
        budget_pp = check_budget(budget_pp)[0]
    own = [r for r in records if r.get("model") == model]
    units = units_from_records(own)
    if units is None:
        raise ValueError(f"no unit_table in the records of {model!r} (schema 1 records): the plan needs unit sizes")
    scores = scores_from_records(own, model)
    if any(len(c) != len(units) for c in scores.costs.values()):
        raise ValueError(f"{model}: scores for {len(next(iter(scores.costs.values())))} units, "
                         f"unit table has {len(units)}")
    plan = solve(units, scores.costs, budget)
    return MixedAnswer(scores, units, plan, verify_command(scores, budget), _measured(own, model, budget),
                       calibrate(calibration_points(own, model)), budget_pp)


def roomier_plan(answer: MixedAnswer) -> Optional[tuple]:
    """(budget, plan, prediction) of the smallest of SCAN_STEPS larger budgets (geometric, up to the float
    bytes) whose plan's upper 95% bound is within --budget; None when none is."""
    units, start = answer.units, answer.plan.budget_bytes
    top = mixed.plan_bytes(units, [mixed.FLOAT] * len(units))
    if answer.predicted is None or answer.budget_pp is None or start >= top:
        return None
    for step in range(1, SCAN_STEPS + 1):
        budget = int(math.ceil(start * (top / start) ** (step / SCAN_STEPS)))
        plan = solve(units, answer.scores.costs, budget)
        predicted = answer.calibration.predict(plan.predicted_cost)
        if predicted[2] <= answer.budget_pp:
            return budget, plan, predicted
    return None


def _interval(drop: tuple) -> str:
    return f"{drop[0]:.2f} pp [{drop[1]:.2f}, {drop[2]:.2f}]"


def budget_lines(answer: MixedAnswer) -> list:
    """The predicted drop of the plan and, with --budget, the verdict against it."""
    cal, predicted = answer.calibration, answer.predicted
    lines = [f"  predicted drop {_interval(predicted)} (95% prediction interval of one run)" if predicted else
             f"  predicted drop: none ({cal.reason if cal is not None else 'not calibrated'})"]
    lines += [f"  {describe(cal)}"] if cal is not None else []
    if answer.budget_pp is None:
        return lines
    head = f"  accuracy budget {answer.budget_pp:g} pp:"
    if predicted is None:
        return lines + [f"{head} not checked: no calibrated drop"]
    if predicted[2] <= answer.budget_pp:
        return lines + [f"{head} upper 95% bound {predicted[2]:.2f} pp <= {answer.budget_pp:g} pp: within the budget"]
    lines.append(f"{head} upper 95% bound {predicted[2]:.2f} pp > {answer.budget_pp:g} pp: NOT within the budget")
    roomier = roomier_plan(answer)
    if roomier is None:
        floor = answer.calibration.predict(0.0)[2]
        lines.append(f"  no plan up to the float weights is predicted within it (at score 0 the upper bound is "
                     f"{floor:.2f} pp: one run's scatter)" if floor > answer.budget_pp else
                     f"  none of {SCAN_STEPS} larger budgets up to the float weights gives a plan within it")
    else:
        budget, plan, pred = roomier
        lines.append(f"  with more bytes: plan {plan.tag} at --size-budget {budget} ({plan.weight_bytes:,} B) "
                     f"predicts {_interval(pred)}")
    return lines


def format_answer(answer: MixedAnswer) -> list:
    units, plan = answer.units, answer.plan
    float_bytes = mixed.plan_bytes(units, [mixed.FLOAT] * len(units))
    smallest = mixed.plan_bytes(units, [min(MIXED_BITS)] * len(units))
    lines = [f"mixed plan: {answer.scores.model}, weight budget {plan.budget_bytes:,} B "
             f"(float {float_bytes:,} B, all INT{min(MIXED_BITS)} {smallest:,} B)",
             f"  scores: {answer.scores.source}",
             f"  {'unit':<5} {'layer':<20} {'bits':<6} {'bytes':>10} {'cost':>10}"]
    for unit, choice in zip(units, plan.choices):
        cost = 0.0 if choice == mixed.FLOAT else answer.scores.costs[choice][unit.index]
        lines.append(f"  {unit.index:<5} {unit.weight_layer:<20} {'float' if choice == mixed.FLOAT else 'INT' + str(choice):<6} "
                     f"{mixed.unit_bytes(unit, choice):>10,} {cost:>10.3g}")
    lines.append(f"  plan {plan.tag}: predicted weight bytes {plan.weight_bytes:,} <= {plan.budget_bytes:,} (exact), "
                 f"predicted cost {plan.predicted_cost:.4g} (summed HAWQ-V2 score)")
    lines += budget_lines(answer)
    if answer.measured:
        lines.append(f"  {answer.measured}")
    lines.append(f"  verify ({answer.case_id}): {answer.command}")
    return lines
