"""The frontier's report section and plot (``frontier-<model>.png``). Pure (no TF).

Written only when the run has ``sensitivity``, ``mixed`` or ``ends8`` records (``frontier.for_report``): a plain
last/first run's report does not change. Per model: the plot of weight bytes (log x) against the
seed-mean drop with its seed-level 95% t interval, one series per selection and bit width (one panel
per method; sensitivity-N and mixed at their seed-mean bytes, a horizontal bar spanning the seeds'
min–max bytes; first-N plotted, not tested); the verdict table of the matched-bytes comparisons; the
table of every compared point at matched bytes; skipped records and points without usable bytes.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.analysis import frontier as _frontier  # noqa: E402

COLOURS = {"last": "tab:blue", "first": "tab:orange", "sensitivity": "tab:green", "mixed": "tab:red", "ends8": "tab:purple"}
MARKERS = {8: "o", 4: "s", None: "D"}  # other widths "^"
LINES = {8: "-", 4: "--", None: ":"}  # other widths "-."
HEADING = "## Frontier: weight bytes vs drop, and last-N at matched bytes"


def _slug(text) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)) or "_"


def _series(points: Sequence) -> dict:
    """{(selection, bits): [usable points sorted by bytes]}."""
    out: dict = {}
    for p in points:
        if p.weight_bytes is not None and p.seeds:
            out.setdefault((p.selection, p.bits), []).append(p)
    return {k: sorted(v, key=lambda p: p.weight_bytes) for k, v in out.items()}


def plot(frontiers: Sequence, model: str, out_dir: Path, save: Callable) -> Path:
    """frontier-<model>.png: one panel per method; ``save(fig, path)`` is the report's saver."""
    mine = [f for f in frontiers if f.model == model]
    fig, axes = plt.subplots(1, len(mine), figsize=(6.0 * len(mine), 4.4), squeeze=False)
    for ax, f in zip(axes[0], mine):
        for (selection, bits), points in _series(f.points).items():
            stats = [p.interval for p in points]
            means = [m for m, _, _ in stats]
            errors = [[0.0 if math.isnan(lo) else m - lo for m, lo, _ in stats],
                      [0.0 if math.isnan(hi) else hi - m for m, _, hi in stats]]
            xs = [p.weight_bytes for p in points]
            spans = [[x - p.bytes_range[0] for x, p in zip(xs, points)],
                     [p.bytes_range[1] - x for x, p in zip(xs, points)]]  # seeds' min–max bytes
            label = _frontier.NAMES[selection] + (f" W{bits}" if bits is not None else "")
            ax.errorbar(xs, means, yerr=errors, xerr=spans if any(map(any, spans)) else None,
                        color=COLOURS[selection], marker=MARKERS.get(bits, "^"), ms=4, capsize=3, lw=1,
                        ls=LINES.get(bits, "-."), label=label)
        ax.set_xscale("log")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(title=f"{model} · {f.method}: drop vs weight bytes (seed mean, 95% t)",
               xlabel="weight bytes (log; horizontal bar: the seeds' min–max)", ylabel="accuracy drop (pp)")
        ax.legend(fontsize=7)
    return save(fig, out_dir / f"frontier-{_slug(model)}.png")


def verdict_table(frontiers: Sequence, model: str) -> list:
    lines = ["| method | comparison | matched points | pairs | drop − last-N drop, pp [95% t] | sign-flip p "
             "| Holm p | verdict |", "|---|---|---|---|---|---|---|---|"]
    for f in (f for f in frontiers if f.model == model):
        for c in f.comparisons:
            p = "–" if math.isnan(c.p_value) else f"{c.p_value:.3g}"
            holm = "–" if math.isnan(c.p_holm) else f"{c.p_holm:.3g}"
            lines.append(f"| {f.method} | {c.name} | {c.n_points} | {c.pairs} | "
                         f"{_frontier.interval_text(c.mean_diff, c.low, c.high)} | {p} | {holm} | {c.verdict} |")
    return lines if len(lines) > 2 else ["- nothing to compare with last-N"]


def points_table(frontiers: Sequence, model: str) -> list:
    lines = ["| method | point | weight B | seeds | drop pp [95% t] | latency ratio | vs | matched seeds "
             "| its drop at these bytes [95% t] | difference [95% t] |", "|---|---|---|---|---|---|---|---|---|---|"]
    for f in (f for f in frontiers if f.model == model):
        for c in f.comparisons:
            for m in c.matched:
                p = m.point
                size = p.bytes_text
                if m.pairs:
                    last, diff = _frontier.interval_text(*m.last_interval), _frontier.interval_text(*m.diff_interval)
                else:
                    last, diff = _frontier.NO_MATCH, "–"
                latency = "–" if p.latency_ratio is None else f"{p.latency_ratio:.2f}"
                lines.append(f"| {f.method} | {p.label} | {size} | {p.seeds} | {_frontier.interval_text(*p.interval)} "
                             f"| {latency} | {m.against_name} | {len(m.pairs)} | {last} | {diff} |")
    return lines if len(lines) > 2 else []


def section(frontiers: Sequence, out_dir: Path, plots_dir: str, save: Callable) -> tuple:
    """(markdown lines, plot paths) of the frontier section; nothing without frontiers."""
    if not frontiers:
        return [], []
    lines = [HEADING, "",
             "Per seed, a point's drop minus that seed's last-N drop interpolated linearly in weight bytes "
             "at that seed's own bytes, between the two last-N points of that seed that bracket them (never "
             "extrapolated); per comparison each seed's mean over its matched points, then over seeds: the "
             "mean with its 95% t interval, the exact sign-flip p and Holm's adjustment over every "
             "sensitivity-N, mixed and ends8 comparison of the run. Negative: the selection costs less than last-N. "
             "ends8 (the literature's default: first and last unit at W8, every other unit at W4) is also set "
             "against each seed's mixed plans, interpolated the same way between that seed's budgets. "
             "Each seed has its own model, so sensitivity-N and mixed may pick different units, and bytes, "
             "per seed: they are placed at the seed-mean bytes, the seeds' min–max given in brackets and as "
             "a horizontal bar. Points at N = 0 or all units quantize the same units as last-N and are not "
             "compared; first-N is plotted only (last vs first is the order test below). Latency ratio: the "
             "point's median batch-1 LiteRT time quantized/control (– where not timed).", ""]
    plots = []
    for model in sorted({f.model for f in frontiers}, key=str):
        lines += [f"### {model}", "", _frontier.verdict(frontiers, model), ""]
        path = plot(frontiers, model, out_dir, save)
        plots.append(path)
        lines += [f"![{path.stem}]({plots_dir}/{path.name})", ""]
        lines += verdict_table(frontiers, model) + [""]
        same = sum(c.identical for f in frontiers if f.model == model for c in f.comparisons)
        lines += [f"- {same} matched points compared identical unit sets (that seed's run quantized exactly "
                  f"last-N's units at the same bytes: a difference of 0 by construction), excluded", ""] if same else []
        table = points_table(frontiers, model)
        lines += (table + [""]) if table else []
        mine = [f for f in frontiers if f.model == model]
        skipped = sum(f.skipped for f in mine)
        problems = [p for f in mine for p in f.problems]
        if skipped:
            lines += [f"- {skipped} record(s) measured no drop (status not passed/failed): left out", ""]
        if problems:
            lines += [f"- **error**: {p}" for p in problems] + [""]
    return lines, plots
