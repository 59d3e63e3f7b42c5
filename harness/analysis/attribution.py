"""Is a last-vs-first difference about position, or about one layer at an end? Pure (numpy).

Issue 32, item 3: with a handful of units, "first N" and "last N" differ by the units at the two ends (a
1-channel input conv, the logits), so a significant whole-order test can be one special layer. Where the
run also has the inner comparison (the first and last unit held out of both orders) and each unit alone
(the ``single`` order) for the same (model, bits, method), this module says which of the three readings
the data support, and claims nothing more:

- the ends: some end unit costs something detectable alone, and the inner comparison finds nothing;
- position: the inner comparison finds the same direction with the ends held out;
- neither: the inner comparison finds nothing and no end unit is detectable alone, so the design cannot
  say what carries the difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from harness.analysis import order_test, unit_costs

SIGNIFICANT = (order_test.FINAL_CHEAPER, order_test.FIRST_CHEAPER)


def group_key(model, bits, method) -> tuple:
    return str(model), int(bits or 0), str(method or "qat").lower()


def units_totals(records: Iterable[dict]) -> dict:
    totals = {}
    for r in records:
        if isinstance(r.get("units_total"), int):
            totals[str(r.get("model"))] = max(totals.get(str(r.get("model")), 0), r["units_total"])
    return totals


def difference_text(test: order_test.MatchedTest) -> str:
    way = "less" if test.mean_diff_pp >= 0 else "more"
    return (f"the last N cost {abs(test.mean_diff_pp):.2f} pp {way} than the first N "
            f"({test.n_seeds} seeds, Holm p {test.p_holm:.2g})")


@dataclass(frozen=True)
class Attribution:
    kind: str  # one of READINGS' keys
    sentence: str


# what the model's one-line verdict appends after "final layers cost less" (harness/analysis/fit_text.py)
READINGS = {"end unit": "by the single-unit cases an end unit's cost, and with the ends held out no position effect detected",
            "position": "by the inner cases, a position effect",
            "too few": "too few inner pairs to tell position from the end units",
            "undetermined": "the inner and single-unit cases cannot say what carries it"}


def attribute(whole, inner, costs: Optional[unit_costs.GroupCosts], units_total: Optional[int]) -> Optional[Attribution]:
    """What carries a significant whole-order test; None when the run has no inner or single cases for it."""
    if inner is None or costs is None or not units_total:
        return None
    ends = {0, units_total - 1}
    end_costs = [c for c in costs.costs if c.unit in ends and c.detected]
    inner_costs = [c for c in costs.costs if c.unit not in ends and c.detected]
    quiet = len(costs.costs) - len(end_costs) - len(inner_costs)
    head = f"{whole.model} W{whole.weight_bits} {whole.method.upper()}, last N vs first N"
    same_way = (inner.test.mean_diff_pp > 0) == (whole.test.mean_diff_pp > 0)
    inner_text = f"with the first and last unit held out, {difference_text(inner.test)}"
    if inner.test.verdict in SIGNIFICANT and same_way:
        return Attribution("position", f"{head}: a position effect: {difference_text(whole.test)}, and {inner_text}.")
    if inner.test.verdict == order_test.TOO_FEW:
        return Attribution("too few", f"{head}: {difference_text(whole.test)}; {inner_text}: too few pairs to tell "
                                      "position from the end units.")
    alone = "; ".join(c.text() for c in end_costs)
    rest = "; ".join([c.text() for c in inner_costs]
                     + [f"the other {quiet} unit{'s' if quiet != 1 else ''} nothing detectable alone"] * (quiet > 0))
    if end_costs and not inner_costs:
        return Attribution("end unit", f"{head}: {difference_text(whole.test)}, and the data put it on an end unit: "
                                       f"alone, {alone}; {rest}; {inner_text}: {inner.test.verdict}.")
    found = "no end unit costs anything detectable alone" if not end_costs else f"alone, {alone}"
    also = f"; inner units alone: {rest}" if inner_costs else ""
    return Attribution("undetermined", f"{head}: {difference_text(whole.test)}, but the design cannot say what carries "
                                       f"it: {found}{also}, and {inner_text}: {inner.test.verdict}.")


def sentence(whole, inner, costs: Optional[unit_costs.GroupCosts], units_total: Optional[int]) -> str:
    """One verdict sentence for a significant whole-order test; "" when the run cannot attribute it."""
    found = attribute(whole, inner, costs, units_total)
    return found.sentence if found else ""


def attributed(comparisons: Sequence, records: Sequence[dict], groups: Optional[Sequence] = None) -> list:
    """(comparison, Attribution or None) per significant, declared whole-order test; ``groups``: the
    records' unit_costs.group_costs, when the caller has them."""
    groups = unit_costs.group_costs(records) if groups is None else groups
    inner = {group_key(c.model, c.weight_bits, c.method): c for c in comparisons if c.primary and c.inner}
    single = {group_key(g.model, g.weight_bits, g.method): g for g in groups if g.order == "single"}
    totals = units_totals(records)
    out = []
    for c in comparisons:
        if not c.primary or c.inner or not c.test.counted or c.test.verdict not in SIGNIFICANT:
            continue
        found = group_key(c.model, c.weight_bits, c.method)
        out.append((c, attribute(c, inner.get(found), single.get(found), totals.get(str(c.model)))))
    return out


def readings(found: Sequence) -> dict:
    """{(model, bits, method): short reading} of ``attributed``'s result, for the model verdict."""
    return {group_key(c.model, c.weight_bits, c.method): READINGS[a.kind] for c, a in found if a is not None}


def verdicts(found: Sequence) -> list:
    """The sentences of ``attributed``'s result, for the report's Verdicts."""
    return [a.sentence for _c, a in found if a is not None]
