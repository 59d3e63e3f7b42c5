"""A run's answer in one paragraph, built from the same analyses as its report. Pure (numpy).

The README's summary of what the reference found is this paragraph for results/reference, written by
``python -m harness.analysis.docs_numbers`` and checked by its test, so it cannot drift from the report;
the report opens with it too. It claims only what the report's tests carry: detected effects with their
intervals, "nothing detectable" with the effect the seeds could have detected, and attributed verdicts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Optional, Sequence

from harness.analysis import attribution, caveats, drop_fit, frontier, order_test, unit_costs
from harness.results import seedstats


def _span(values: Sequence[float], spec: str = ".3f") -> str:
    low, high = min(values), max(values)
    return format(low, spec) if format(low, spec) == format(high, spec) else f"{low:{spec}}–{high:{spec}}"


def controls(records: Sequence[dict]) -> str:
    """Each model's float controls (one per seed) and its test-set size."""
    per_model = defaultdict(dict)
    tests = defaultdict(set)
    for r in records:
        value = seedstats.as_number(r.get("control_accuracy"))
        if value is not None:
            per_model[str(r.get("model"))][r.get("seed")] = value
            tests[str(r.get("model"))].add(r.get("n_test"))
    if not per_model:
        return ""
    parts = []
    for model in sorted(per_model):
        sizes = sorted(n for n in tests[model] if isinstance(n, int))
        size = f", {sizes[0]:,} test examples" if len(sizes) == 1 else ""
        seeds = len(per_model[model])
        parts.append(f"{model} {_span(list(per_model[model].values()))} (over {seeds} seed{'s' * (seeds != 1)}{size})")
    scored = "tie-aware accuracy" if all(r.get("control_ties") is not None for r in records) else "accuracy"
    return f"Float controls ({scored}): " + ", ".join(parts) + "."


def units_alone(groups: Sequence[unit_costs.GroupCosts]) -> str:
    """Which units cost something detectable alone, and how small an effect the rest could have shown."""
    single = [g for g in groups if g.order == "single"]
    if not single:
        return ""
    found = [f"{g.head} {c.text()}" for g in single for c in g.costs if c.detected]
    testable = [g for g in single if not math.isinf(g.detectable_pp)]
    short = [g.head for g in testable if g.detectable_pp > unit_costs.TARGET_PP.get(g.weight_bits, math.inf)]
    untestable = [g.head for g in single if math.isinf(g.detectable_pp)]
    tested = " tested" if untestable else ""
    text = ("Each unit quantized alone: " + ("; ".join(found) + f"; every other unit, width and method{tested}: "
                                             if found else "no unit at any width or method costs anything detectable; ")
            if testable else "Each unit quantized alone: ")
    if testable:
        text += (f"nothing detectable, where the seeds could detect "
                 f"{_span([g.detectable_pp for g in testable], '.2f')} pp at 80% power")
        text += (f" ({', '.join(short)} {'misses' if len(short) == 1 else 'miss'} the 0.2 pp (W8) / 0.5 pp (W4) target)" if short else
                 " (within the 0.2 pp (W8) / 0.5 pp (W4) targets)")
    if untestable:
        text += ("; " if testable else "") + f"too few seeds to test {', '.join(untestable)}"
    return text + "."


def last_vs_first(comparisons: Sequence, records: Sequence[dict], groups: Optional[Sequence] = None) -> str:
    """The declared last-vs-first tests: a sentence per significant one (attributed where the run can), a
    count of the rest."""
    counted = [c for c in comparisons if c.primary and c.test.counted]
    if not counted:
        return ""
    significant = [c for c in counted if c.test.verdict in attribution.SIGNIFICANT]
    said = {id(c): a.sentence for c, a in attribution.attributed(comparisons, records, groups) if a is not None}
    out = []
    for c in significant:
        out.append(said.get(id(c)) or (
            f"{c.model} W{c.weight_bits} {c.method.upper()}{', first and last unit held out' * c.inner}: "
            f"{attribution.difference_text(c.test)}: {c.test.verdict}"
            + ("" if c.inner else "; the run has no inner or single-unit cases to say whether position "
               "or an end unit carries it") + "."))
    quiet = len(counted) - len(significant)
    held = " (whole, and with the first and last unit held out)" if any(c.inner for c in counted) else ""
    if quiet:
        out.append(f"The other {quiet} declared last-vs-first test{'s' * (quiet != 1)}{held}: no significant difference.")
    return " ".join(out)


def frontier_text(frontiers: Sequence) -> str:
    """The matched-bytes comparisons that found a difference, or that none did."""
    tested = [c for f in frontiers for c in f.comparisons if c.pairs]
    if not tested:
        return ""
    found = [f"{c.model} {c.method.upper()} {c.name} {frontier.interval_text(c.mean_diff, c.low, c.high)} pp "
             f"(Holm p {c.p_holm:.2g}): {c.verdict}"
             for c in tested if not c.verdict.startswith((frontier.TOO_FEW, frontier.NO_DIFFERENCE))]
    if not found:
        return "At matched weight bytes no selection differs significantly from last-N or the mixed plans."
    return "At matched weight bytes: " + "; ".join(found) + "; no other comparison differs significantly."


def hypothesis_text(groups: Sequence[unit_costs.GroupCosts]) -> str:
    """The seed report's attention-vs-final-layer claim, per model, over the type groups that test it."""
    by_model = defaultdict(list)
    for g in groups:
        c = unit_costs.claim(g) if g.order == "type" else None
        if c is not None:
            by_model[g.model].append((g, c))
    out = []
    for model, found in sorted(by_model.items()):
        results = sorted({c.result for _, c in found})
        verdict = results[0] if len(results) == 1 else "mixed across widths"
        each = ", ".join(f"{c.mean:+.2f} pp {c.span} at W{g.weight_bits} {g.method.upper()} (Holm p {c.p_holm:.2g})"
                         for g, c in found)
        out.append(f"{model}: the seed report's claim that attention costs more than the final layer "
                   f"({found[0][1].final}) is {verdict} (attention - {found[0][1].final} {each}).")
    return " ".join(out)


def _caveats(lines: list) -> str:
    return " ".join(line for line in lines if line)


def paragraph(records: Sequence[dict], comparisons: Optional[Sequence] = None, frontiers: Optional[Sequence] = None,
              groups: Optional[Sequence] = None) -> str:
    """The run's findings as one paragraph, from every record of the run ("" without measured records):
    the caveats that limit what it can say first (argmax-era records, controls below their floor), the
    test-set resolution last. The report passes the comparisons, frontiers and unit costs it states, so both say the same."""
    good = drop_fit.measured(records)
    if not good:
        return ""
    groups = unit_costs.group_costs(good) if groups is None else groups
    comparisons = order_test.compare_orders(good) if comparisons is None else comparisons
    frontiers = frontier.for_report(records) if frontiers is None else frontiers
    sentences = (_caveats(caveats.argmax_warning(good) + caveats.control_floor_lines(records)), controls(good),
                 units_alone(groups), last_vs_first(comparisons, good, groups), frontier_text(frontiers),
                 hypothesis_text(groups), _caveats(caveats.resolution_lines(good)))
    return " ".join(s for s in sentences if s)
