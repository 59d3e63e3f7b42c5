"""Markdown report and PNG plots for one run folder, plus a compact terminal summary. Pure (no TF).

Files: <run_dir>/report.md and <run_dir>/plots/*.png:
  drop-<model>-<method>.png   accuracy drop vs N, one panel per order, one colour per bit width:
                              every run as a point, the AICc-chosen formula as a line and its 95%
                              confidence band (mean curve, seed shifts included; see harness.analysis.drop_fit);
  size-<model>.png            tflite_bytes and weight_bytes vs N with predicted_weight_bytes as a line;
  methods-<model>.png         QAT vs PTQ mean drop vs N (only when both methods exist);
  latency-<model>.png         drop, bytes and LiteRT latency ratio vs N (only with timed records; latency_report);
  frontier-<model>.png        weight bytes vs drop per selection (only with sensitivity or mixed records;
                              see harness.analysis.frontier and frontier_report).
Tables give each run's drop with its paired 95% interval (``paired.drop_label``, "~" = inside
the noise) and, where several seeds exist, the mean over seeds with its t-interval. The order test
is ``compare``'s per-seed sign-flip sentences. Records that did not pass are listed with their
error; groups with < 3 distinct N > 0 say "not enough N to fit"; zero measured records still give
a report.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harness.analysis import order_test as _compare  # noqa: E402
from harness.analysis import attribution  # noqa: E402
from harness.analysis import findings  # noqa: E402
from harness.analysis import drop_fit as _fit  # noqa: E402
from harness.analysis import frontier as _frontier  # noqa: E402
from harness.analysis import frontier_report  # noqa: E402
from harness.analysis import fit_text  # noqa: E402
from harness.analysis.fit_text import fit_lines, model_verdict  # noqa: E402,F401 (the report's API)
from harness.analysis import latency_report  # noqa: E402
from harness.analysis import sensitivity_check  # noqa: E402
from harness.analysis import tie_direction  # noqa: E402
from harness.analysis import unit_costs  # noqa: E402
from harness.analysis.caveats import argmax_warning, control_floor_lines, resolution_lines  # noqa: E402
from harness.case import paired  # noqa: E402
from harness.analysis import plan as _plan  # noqa: E402
from harness.results import seedstats  # noqa: E402
from harness.design.config import ORDERS  # noqa: E402
from harness.results.records import STATUSES, write_text_atomic  # noqa: E402

FIT_ORDERS = ("last", "first")
PLOTS_DIR = "plots"


@dataclass(frozen=True)
class Report:
    path: Path
    plots: tuple
    fits: tuple
    comparisons: tuple
    plans: tuple
    size_checks: tuple
    frontiers: tuple = ()


def measured(records: Iterable[dict]) -> list:
    """Records that carry numbers: status passed/failed with an accuracy drop."""
    return _fit.measured(records)


def _slug(text) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)) or "_"


def _fmt(value, spec: str = ".3g") -> str:
    value = _fit.as_number(value)
    return "–" if value is None else format(value, spec)


def _sort_key(value):
    return (value is None, str(value) if not isinstance(value, (int, float)) else "", value if isinstance(value, (int, float)) else 0)


def _by(records: Iterable[dict], field: str) -> dict:
    out = defaultdict(list)
    for r in records:
        out[r.get(field)].append(r)
    rank = (lambda k: (ORDERS.index(k) if k in ORDERS else len(ORDERS), _sort_key(k))) if field == "order" else _sort_key
    return {key: out[key] for key in sorted(out, key=rank)}


def _why_not_passed(record: dict) -> str:
    """A failed case broke thresholds (its violations); the others raised (their error)."""
    reasons = [_first_line(v) for v in record.get("violations") or []] or [_first_line(record.get("error"))]
    return "; ".join(r for r in reasons if r) or "(no error message)"


def _first_line(text) -> str:
    lines = str(text or "").strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= 200 else line[:197] + "..."


def _kinds(records: Sequence[dict]) -> list:
    return sorted({str(r.get("kind")) for r in records if r.get("order") == "type"})


def _x(record: dict, kinds: Sequence[str]) -> int:
    """Where a record sits on a plot's x axis: N, or for the `type` order (N = 0 for every kind) its kind's place."""
    return kinds.index(str(record.get("kind"))) if record.get("order") == "type" else int(record["n"])


def _kind_ticks(ax, order: str, kinds: Sequence[str]) -> None:
    if order == "type" and kinds:
        ax.set_xticks(range(len(kinds)), kinds)


def _means(records: Sequence[dict], field: str) -> tuple:
    per_n = defaultdict(list)
    kinds = _kinds(records)
    for r in records:
        v = _fit.as_number(r.get(field))
        if v is not None:
            per_n[_x(r, kinds)].append(v)
    ns = sorted(per_n)
    return np.array(ns, float), np.array([np.median(per_n[n]) for n in ns], float)


def _panels(count: int):
    fig, axes = plt.subplots(1, count, figsize=(5.2 * count, 4.0), squeeze=False)
    return fig, list(axes[0])


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _xlabel(order: str) -> str:
    """A mixed case's n is its weight-bytes budget, an ends8 case's 0 (one plan), not a unit count."""
    if order == "ends8":
        return "one plan: first and last unit W8, the rest W4"
    if order in ("last-inner", "first-inner"):
        return "N (inner units quantized; first and last unit float)"
    if order == "single":
        return "unit index (that unit alone quantized)"
    if order == "type":
        return "kind of unit (every unit of that kind quantized)"
    return "weight-bytes budget" if order == "mixed" else "N (units quantized)"


def plot_drop(model: str, method: str, records: Sequence[dict], fits: dict, out_dir: Path) -> Path:
    orders = _by(records, "order")
    fig, axes = _panels(len(orders))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (order, group) in zip(axes, orders.items()):
        for i, (bits, rows) in enumerate(_by(group, "weight_bits").items()):
            colour = colours[i % len(colours)]
            ax.scatter([_x(r, _kinds(group)) for r in rows], [r["accuracy_drop_pp"] for r in rows], s=14, color=colour, alpha=0.7)
            label = f"w{bits}"
            gfit = fits.get((model, order, bits, method))
            if gfit is not None and gfit.fitted:
                grid = np.linspace(0, max(gfit.n_values), 80)
                ns, est, low, high = _fit.curve(gfit, grid, interval="confidence")
                ax.plot(ns, est, color=colour)
                ax.fill_between(ns, low, high, color=colour, alpha=0.15)
                label += f": {gfit.best.formula.replace('drop_pp ≈ ', '')}"
            elif gfit is not None:
                label += " (not enough N to fit)" if "not enough N" in gfit.reason else " (no fit)"
            ax.plot([], [], color=colour, label=label)
        ax.set(title=f"{model} · {order} · {method}", xlabel=_xlabel(order), ylabel="accuracy drop (pp)")
        _kind_ticks(ax, order, _kinds(group))
        ax.axhline(0, color="grey", lw=0.5)
        ax.legend(fontsize=7)
    return _save(fig, out_dir / f"drop-{_slug(model)}-{_slug(method)}.png")


def plot_size(model: str, records: Sequence[dict], out_dir: Path) -> Optional[Path]:
    sized = [r for r in records if _fit.as_number(r.get("tflite_bytes")) is not None or _fit.as_number(r.get("weight_bytes")) is not None]
    if not sized:
        return None
    orders = _by(sized, "order")
    fig, axes = _panels(len(orders))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (order, group) in zip(axes, orders.items()):
        for i, (bits, rows) in enumerate(_by(group, "weight_bits").items()):
            colour = colours[i % len(colours)]
            for field, marker in (("tflite_bytes", "o"), ("weight_bytes", "x")):
                ns, ys = _means(rows, field)
                if ns.size:
                    ax.scatter(ns, ys, marker=marker, color=colour, label=f"w{bits} {field}")
            ns, ys = _means(rows, "predicted_weight_bytes")
            if ns.size:
                ax.plot(ns, ys, color=colour, label=f"w{bits} predicted weight bytes")
        ax.set(title=f"{model} · {order}: size vs N", xlabel=_xlabel(order), ylabel="bytes")
        _kind_ticks(ax, order, _kinds(group))
        ax.legend(fontsize=7)
    return _save(fig, out_dir / f"size-{_slug(model)}.png")


def plot_methods(model: str, records: Sequence[dict], out_dir: Path) -> Optional[Path]:
    if len({r.get("method") or "qat" for r in records}) < 2:
        return None
    orders = _by(records, "order")
    fig, axes = _panels(len(orders))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (order, group) in zip(axes, orders.items()):
        for i, (bits, rows) in enumerate(_by(group, "weight_bits").items()):
            for method, style in (("qat", "-"), ("ptq", "--")):
                ns, ys = _means([r for r in rows if (r.get("method") or "qat") == method], "accuracy_drop_pp")
                if ns.size:
                    ax.plot(ns, ys, style, marker="o", color=colours[i % len(colours)], label=f"w{bits} {method}")
        ax.set(title=f"{model} · {order}: QAT vs PTQ", xlabel=_xlabel(order), ylabel="median drop (pp)")
        _kind_ticks(ax, order, _kinds(group))
        ax.legend(fontsize=7)
    return _save(fig, out_dir / f"methods-{_slug(model)}.png")


def _median(group: Sequence[dict], field: str) -> Optional[float]:
    values = [v for v in (_fit.as_number(r.get(field)) for r in group) if v is not None]
    return float(np.median(values)) if values else None


def by_construction(group: Sequence[dict]) -> bool:
    """N = 0 of a unit-count order with every drop exactly 0: nothing was quantized, no interval to give."""
    return all(r.get("n") == 0 and r.get("order") in ("last", "first", "sensitivity")
               and r.get("accuracy_drop_pp") == 0 for r in group)


def drop_cells(group: Sequence[dict]) -> tuple:
    """(seed-mean cell, per-run cell) of one (order, bits, method, N) row."""
    if group and by_construction(group):
        return f"0 (by construction, {len(group)} runs)", "—"
    per_seed = seedstats.cell_means(group, key=lambda r: 0)
    mean, low, high = seedstats.mean_interval(list(per_seed.values()))
    if len(per_seed) >= 2:
        mean_cell = f"{paired.drop_label(mean, [low, high])} ({len(per_seed)} seeds)"
    else:
        mean_cell = f"{mean:.2f} (1 seed)"
    runs = sorted(group, key=lambda r: _sort_key(r.get("seed")))
    run_cells = [f"s{r.get('seed')}: " + paired.drop_label(float(r["accuracy_drop_pp"]), r.get("drop_ci95_pp"))
                 for r in runs]
    return mean_cell, "; ".join(run_cells)


def results_table(records: Sequence[dict]) -> list:
    """Markdown table lines: one row per (order, bits, method, N or kind); seeds summarised, runs listed."""
    lines = ["| order | bits | method | N (or kind) | runs | param frac | control acc | quant acc "
             "| drop pp: seed mean [95% t] | each run: drop [paired 95%] | tflite B | weight B | predicted B | size err |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = defaultdict(list)
    for r in records:
        rows[(r.get("order"), r.get("weight_bits"), r.get("method") or "qat", latency_report.row_position(r))].append(r)
    for key in sorted(rows, key=lambda k: tuple(_sort_key(p) for p in k)):
        group = rows[key]
        mean_cell, run_cell = drop_cells(group)
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {len(group)} "
                     f"| {_fmt(_median(group, 'param_fraction'), '.3f')} | {_fmt(_median(group, 'control_accuracy'), '.4f')} "
                     f"| {_fmt(_median(group, 'quant_accuracy'), '.4f')} | {mean_cell} | {run_cell} "
                     f"| {_fmt(_median(group, 'tflite_bytes'), ',.0f')} | {_fmt(_median(group, 'weight_bytes'), ',.0f')} "
                     f"| {_fmt(_median(group, 'predicted_weight_bytes'), ',.0f')} "
                     f"| {_fmt(_median(group, 'size_error_rel'), '.2%')} |")
    return lines


def _status_line(records: Sequence[dict]) -> str:
    counts = Counter(str(r.get("status")) for r in records)
    parts = [f"{counts[s]} {s}" for s in STATUSES if counts[s]]
    parts += [f"{c} {s}" for s, c in sorted(counts.items()) if s not in STATUSES]
    return f"{len(records)} cases: " + (", ".join(parts) or "none")


def analyse(records: Sequence[dict], budget_pp: Optional[float] = None, size_budget: Optional[float] = None) -> tuple:
    """(fits, comparisons, plans, size_checks) of the records (plans also see diverged runs)."""
    good = measured(records)
    fits = _fit.fit_records(good, FIT_ORDERS)
    comparisons = _compare.compare_orders(good)
    plans = ()
    if budget_pp is not None:
        by_key = {f.key: f for f in fits}
        groups = _fit.group_records(records, ("last",))
        plans = tuple(_plan.plan_group(by_key.get(k) or _fit.fit_group(g), budget_pp, records=g, size_budget=size_budget)
                      for k, g in groups.items())
    return fits, comparisons, plans, _plan.size_check(good)


def spearman_section(records: Sequence[dict]) -> list:
    """Does the sensitivity score rank units like their measured single-unit drops? Only for runs with
    both ``sensitivity`` (the scores) and ``single`` records (harness/analysis/sensitivity_check.py)."""
    results = sensitivity_check.spearman_check(records, sensitivity_check.scores_from_records(records))
    if not results:
        return []
    return (["## Sensitivity score vs measured single-unit drop (Spearman, 95% bootstrap interval over seeds)", ""]
            + [f"- {line}" for line in sensitivity_check.describe(results)] + [""])


def verdict_lines(good, comparisons, fits, frontiers, groups) -> list:
    found = attribution.attributed(comparisons, good, groups)
    readings = attribution.readings(found)
    verdicts = [model_verdict(model, comparisons, fits, readings) for model in _by(good, "model")]
    verdicts += attribution.verdicts(found)
    verdicts += [_frontier.verdict(frontiers, model) for model in sorted({f.model for f in frontiers}, key=str)]
    verdicts += [unit_costs.verdict(g) for g in groups]
    return ["## Verdicts", ""] + [f"- {v}" for v in verdicts if v] + [""] if any(verdicts) else []


def write_report(records: Sequence[dict], run_dir, *, budget_pp: Optional[float] = None,
                 size_budget: Optional[float] = None, problems: Sequence[str] = (),
                 title: str = "qatbench report") -> Report:
    """Write <run_dir>/report.md and its plots; returns what was written and computed."""
    if budget_pp is not None:
        budget_pp, size_budget = _plan.check_budget(budget_pp, size_budget)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    records = list(records)
    good = measured(records)
    fits, comparisons, plans, checks = analyse(records, budget_pp, size_budget)
    fit_by_key = {f.key: f for f in fits}
    lines = [f"# {title}", "", f"Run folder: `{run_dir}` — {_status_line(records)}; {len(good)} measured.", ""]
    plots = []
    if not good:
        lines += ["**No measured records** (none passed or failed with an accuracy drop): nothing to fit or plot.", ""]
    frontiers = _frontier.for_report(records)
    groups = unit_costs.group_costs(good)
    summary = findings.paragraph(records, comparisons, frontiers, groups)
    lines += ["## In one paragraph", "", summary, ""] if summary else []
    lines += verdict_lines(good, comparisons, fits, frontiers, groups) + argmax_warning(good) + resolution_lines(good)
    lines += control_floor_lines(records)
    for model, rows in _by(good, "model").items():
        lines += [f"## {model}", ""] + results_table(rows) + ["", "### Accuracy-drop formulas", ""]
        model_fits = [f for f in fits if f.model == model]
        lines += [line for f in model_fits for line in fit_lines(f)] or ["- no last/first groups to fit"]
        lines += ["", "### Size formula check (predicted vs measured weight bytes)", ""]
        for c in (c for c in checks if c.model == model):
            err = "no sizes" if c.max_rel_error is None else f"max relative error {c.max_rel_error:.3%} ({c.worst_case_id})"
            lines.append(f"- {c.order} · w{c.weight_bits} · {c.method}: {err} — {'ok' if c.ok else 'OVER'} "
                         f"tolerance {c.tolerance:.1%}")
        lines += ["", "### Plots", ""]
        out_dir = run_dir / PLOTS_DIR
        by_method = defaultdict(list)
        for r in rows:
            by_method[r.get("method") or "qat"].append(r)
        made = [plot_drop(model, method, by_method[method], fit_by_key, out_dir) for method in sorted(by_method)]
        made += [plot_size(model, rows, out_dir), plot_methods(model, rows, out_dir)]
        for path in (p for p in made if p is not None):
            plots.append(path)
            lines.append(f"![{path.stem}]({PLOTS_DIR}/{path.name})")
        lines.append("")
        latency_lines, latency_plots = latency_report.section(model, rows, out_dir, PLOTS_DIR, _save)
        lines, plots = lines + latency_lines, plots + latency_plots
    frontier_lines, frontier_plots = frontier_report.section(frontiers, run_dir / PLOTS_DIR, PLOTS_DIR, _save)
    lines += frontier_lines + unit_costs.section(good) + tie_direction.section(good, tie_direction.reader(run_dir))
    lines += spearman_section(records)
    plots += frontier_plots
    lines += ["## Last vs first layers (per-seed sign-flip test of drop_first − drop_last, Holm-adjusted)", ""]
    lines += ([f"- {_compare.family_text(comparisons)}"] if comparisons else []) + \
        [f"- {sentence}" for c in comparisons for sentence in c.sentences()] or \
        ["- no (model, bits, method) with both 'last' and 'first' records"]
    lines.append("")
    if budget_pp is not None:
        lines += [f"## Plan: accuracy budget {budget_pp:g} pp" + (f", size budget {size_budget:,.0f} B" if size_budget else ""),
                  "", "```"] + (_plan.format_plans(plans) if plans else ["no 'last' groups to plan"]) + ["```", ""]
    not_passed = [r for r in records if r.get("status") != "passed"]
    lines += ["## Cases that did not pass", ""]
    lines += [f"- `{r.get('case_id')}` — {r.get('status')}: {_why_not_passed(r)}" for r in not_passed] or ["- none"]
    if problems:
        lines += ["", "## Unreadable records", ""] + [f"- {_first_line(p)}" for p in problems]
    path = run_dir / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return Report(path=path, plots=tuple(plots), fits=fits, comparisons=comparisons, plans=plans, size_checks=checks,
                  frontiers=frontiers)


def terminal_summary(records: Sequence[dict], *, budget_pp: Optional[float] = None,
                     size_budget: Optional[float] = None, report_path=None, written: Optional[Report] = None) -> list:
    """A few lines for pytest's terminal summary; ``written``: the report of the same records, whose
    analysis is reused rather than computed again."""
    records = list(records)
    if written is not None:
        fits, comparisons, plans, checks = written.fits, written.comparisons, written.plans, written.size_checks
    else:
        fits, comparisons, plans, checks = analyse(records, budget_pp, size_budget)
    lines = [f"qatbench: {_status_line(records)}"]
    for f in fits:
        tag = f"{f.model} {f.order} w{f.weight_bits} {f.method}"
        lines.append(f"  {tag}: {fit_text.short(f)}")
    errors = [c.max_rel_error for c in checks if c.max_rel_error is not None]
    if errors:
        bad = sum(not c.ok for c in checks)
        lines.append(f"  size formula: max relative error {max(errors):.2%}" + (f", {bad} group(s) over tolerance" if bad else ""))
    lines += [f"  last vs first: {c.sentence(c.test)}" for c in comparisons]
    for p in plans:
        answer = f"N={p.n}" if p.n is not None else "none"
        lines.append(f"  plan {p.model} w{p.weight_bits} {p.method} ≤{p.budget_pp:g} pp: {answer} ({p.reason})")
    if report_path is not None:
        lines.append(f"  report: {report_path}")
    return lines
