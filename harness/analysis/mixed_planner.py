"""The planner's mixed answer: float, INT8 or INT4 per unit within a weight-bytes budget. Pure.

``python -m harness plan --results RUN --size-budget BYTES`` (or ``--order mixed``). The plan is
harness.spec.mixed.mixed_plan (exact) over the unit table and the HAWQ-V2 scores that a run's records
hold: this module computes no score. The scores are those of one pre-trained float model, taken from
(in this order) a ``mixed`` case's ``mixed_plan`` (scores at 8 and 4 bits), or two ``sensitivity``
cases at 8 and at 4 bits of the same pre-trained model; the lowest seed's pre-trained model when a
tier pre-trains per seed. The answer says which records and which pre-trained model they came from,
and prints the pytest command that runs that plan as a case (it re-solves the plan from its own
pre-trained model's scores: the same plan when that model is the one named).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from harness.analysis.drop_fit import units_from_records
from harness.results.records import MEASURED
from harness.results.seedstats import drop_of
from harness.spec import mixed
from harness.spec.config import MAX_BUDGET_BYTES, MIXED_BITS, Case, QuantConfig, Selection


@dataclass(frozen=True)
class Scores:
    """Per-unit costs of one pre-trained model at MIXED_BITS, and where they came from."""

    model: str
    tier: str
    seed: int
    costs: dict  # bits -> cost per unit, graph order (negative scores clipped to 0)
    pretrained_key: str
    source: str  # which records, which method


def _from_mixed(record: dict) -> Optional[dict]:
    rows = sorted(record["mixed_plan"].get("units") or [], key=lambda u: u["index"])
    try:
        return {b: [max(0.0, float(u["score"][str(b)])) for u in rows] for b in MIXED_BITS}
    except (KeyError, TypeError, ValueError):
        return None


def _candidates(records: Sequence[dict], model: str) -> list:
    """(seed, pretrained key, costs, source) from every record of ``model`` that holds scores."""
    found, by_key = [], {}
    for r in records:
        if r.get("model") != model:
            continue
        seed = int(r.get("seed") or 0)
        if isinstance(r.get("mixed_plan"), dict):
            costs = _from_mixed(r)
            scores = r["mixed_plan"].get("scores") or {}
            if costs:
                found.append((seed, scores.get("pretrained_key"), costs, f"mixed_plan of {r.get('case_id')}", scores))
        field = r.get("sensitivity")
        if isinstance(field, dict) and field.get("units") and field.get("bits") in MIXED_BITS:
            rows = sorted(field["units"], key=lambda u: u["index"])
            entry = by_key.setdefault(field.get("pretrained_key"), {"seed": seed, "costs": {}, "ids": [], "f": field})
            entry["seed"] = min(entry["seed"], seed)
            entry["costs"][field["bits"]] = [max(0.0, float(u["score"])) for u in rows]
            entry["ids"].append(str(r.get("case_id")))
    for key, entry in by_key.items():
        if all(b in entry["costs"] for b in MIXED_BITS):
            found.append((entry["seed"], key, entry["costs"],
                          f"sensitivity of {', '.join(sorted(entry['ids'])[:2])}", entry["f"]))
    return found


def scores_from_records(records: Sequence[dict], model: str) -> Scores:
    """The scores the plan uses (see the module docstring); ValueError saying what to run when none."""
    found = _candidates(records, model)
    if not found:
        raise ValueError(f"no sensitivity scores at {' and '.join(map(str, MIXED_BITS))} bits for {model!r} in "
                         f"these records: run its mixed cases (pytest benchmarks --qat-models {model} "
                         f"--qat-orders mixed --qat-mixed-budgets BYTES) or sensitivity cases at both widths")
    # the lowest seed's pre-trained model; a mixed case's scores before sensitivity cases' of the same seed
    seed, key, costs, source, meta = min(found, key=lambda c: (c[0], not c[3].startswith("mixed_plan"), c[3]))
    tier = next((str(r.get("tier")) for r in records if r.get("model") == model and r.get("tier")), "smoke")
    how = (f"HAWQ-V2 scores ({meta.get('method', '?')}, {meta.get('probes', '?')} probes, "
           f"{meta.get('examples', '?')} training examples) of the pre-trained float model {key} (seed {seed}), "
           f"from the {source}")
    return Scores(model, tier, seed, costs, str(key), how)


@dataclass(frozen=True)
class MixedAnswer:
    scores: Scores
    units: tuple
    plan: mixed.MixedPlan
    command: str
    measured: str  # the measured drop of this case in the records, or ""

    @property
    def case_id(self) -> str:
        return Case(self.scores.model, Selection("mixed", self.plan.budget_bytes), QuantConfig(min(MIXED_BITS))).id


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


def mixed_answer(records: Sequence[dict], model: str, size_budget) -> MixedAnswer:
    """The plan of least predicted cost within ``size_budget`` weight bytes; ValueError (one line) for a
    bad or infeasible budget, or records without a unit table or scores."""
    budget = check_size_budget(size_budget)
    own = [r for r in records if r.get("model") == model]
    units = units_from_records(own)
    if units is None:
        raise ValueError(f"no unit_table in the records of {model!r} (schema 1 records): the plan needs unit sizes")
    scores = scores_from_records(own, model)
    if any(len(c) != len(units) for c in scores.costs.values()):
        raise ValueError(f"{model}: scores for {len(next(iter(scores.costs.values())))} units, "
                         f"unit table has {len(units)}")
    plan = mixed.mixed_plan(units, scores.costs, budget, chain=True)  # as the case solves it
    return MixedAnswer(scores, units, plan, verify_command(scores, budget), _measured(own, model, budget))


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
    lines.append(f"  plan {plan.tag}: predicted cost {plan.predicted_cost:.4g} (summed HAWQ-V2 score, not pp), "
                 f"predicted weight bytes {plan.weight_bytes:,} <= {plan.budget_bytes:,}")
    if answer.measured:
        lines.append(f"  {answer.measured}")
    lines.append(f"  verify ({answer.case_id}): {answer.command}")
    return lines
