"""What partial quantization buys at inference, per N: the batch-1 LiteRT latency ratio beside the drop
and the bytes, for each model and bit width. Pure (no TF).

The ratio is quantized/control measured side by side in one process (harness/case/latency.py), so it
holds for the machine kind that measured it (records' env.machine.cpu) and says nothing absolute.
Over seeds the report shows the median ratio and the range of the per-case 95% intervals (lowest low
to highest high: every run's interval lies inside it). ``upper_bounds`` is what the planner's latency
budget reads: per N, the highest upper bound any timed run of that N gave, so an N is accepted only
when every run of it was within the budget.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from harness.results.seedstats import as_number

ORDER_STYLES = {"last": "-", "first": "--", "single": ":", "type": "-.", "sensitivity": "-", "mixed": ""}


def timed(records: Sequence[dict]) -> list:
    return [r for r in records if as_number(r.get("latency_ratio")) is not None]


def upper_of(record: dict) -> Optional[float]:
    """A run's upper 95% bound of its ratio (the ratio itself when too few rounds gave no interval)."""
    interval = record.get("latency_ratio_ci95") or ()
    return as_number(interval[1]) if len(interval) == 2 else as_number(record.get("latency_ratio"))


def upper_bounds(records: Sequence[dict]) -> dict:
    """{N: the highest upper bound of the ratio over the timed runs of N} of one group's records."""
    out: dict = {}
    for r in timed(records):
        upper = upper_of(r)
        if upper is not None and r.get("n") is not None:
            out[int(r["n"])] = max(out.get(int(r["n"]), upper), upper)
    return out


def _cell(rows: Sequence[dict]) -> str:
    ratios = [as_number(r["latency_ratio"]) for r in rows]
    lows = [as_number((r.get("latency_ratio_ci95") or [None, None])[0]) for r in rows]
    highs = [upper_of(r) for r in rows]
    text = f"{np.median(ratios):.2f}"
    if all(v is not None for v in lows + highs):
        text += f" [{min(lows):.2f}, {max(highs):.2f}]"
    return text + (f" ({len(rows)} runs)" if len(rows) > 1 else "")


def _median_text(rows: Sequence[dict], field: str, spec: str) -> str:
    values = [v for v in (as_number(r.get(field)) for r in rows) if v is not None]
    return format(float(np.median(values)), spec) if values else "–"


def _ops_text(rows: Sequence[dict]) -> str:
    pairs = sorted({(r.get("quantize_ops"), r.get("dequantize_ops")) for r in rows if r.get("quantize_ops") is not None})
    return ", ".join(f"{q}/{d}" for q, d in pairs) or "–"


def row_position(record: dict):
    """N, or for the `type` order the kind of unit: every kind's cases have N = 0, and one row per kind
    keeps attention, feed-forward and head apart instead of pooling their seeds into one mean."""
    return str(record.get("kind")) if record.get("order") == "type" else int(record.get("n") or 0)


def _position_key(position) -> tuple:
    """Numbers in numeric order, then kinds of unit by name."""
    return (0, position, "") if isinstance(position, int) else (1, 0, str(position))


def table(records: Sequence[dict]) -> list:
    """Markdown lines of one model: a row per (order, bits, method, N or kind) with the median drop, the .tflite
    bytes, the latency ratio and the QUANTIZE/DEQUANTIZE ops; [] when no record of the model was timed."""
    if not timed(records):
        return []
    rows = defaultdict(list)
    for r in records:
        rows[(str(r.get("order")), r.get("weight_bits") or 0, r.get("method") or "qat", row_position(r))].append(r)
    kinds = sorted({str(((r.get("env") or {}).get("machine") or {}).get("cpu", {}).get("model")) for r in timed(records)})
    lines = [f"Batch-1 LiteRT latency, quantized/control in the same rounds (1 thread; measured on {', '.join(kinds)}): "
             "median over runs [lowest to highest per-run 95% bound]; below 1 the quantized file is faster.", "",
             "| order | bits | method | N (or kind) | drop pp (median) | tflite B | latency ratio | Q/DQ ops |", "|---|---|---|---|---|---|---|---|"]
    for (order, bits, method, n), group in sorted(rows.items(), key=lambda item: (item[0][:3], _position_key(item[0][3]))):
        ratio = _cell(timed(group)) if timed(group) else "not timed"
        lines.append(f"| {order} | {bits} | {method} | {n} | {_median_text(group, 'accuracy_drop_pp', '.2f')} "
                     f"| {_median_text(group, 'tflite_bytes', ',.0f')} | {ratio} | {_ops_text(group)} |")
    return lines


def _series(rows: Sequence[dict], field: str) -> tuple:
    per_n = defaultdict(list)
    for r in rows:
        value = as_number(r.get(field))
        if value is not None and r.get("n") is not None:
            per_n[int(r["n"])].append(value)
    ns = sorted(per_n)
    return ns, [float(np.median(per_n[n])) for n in ns]


PANELS = (("accuracy_drop_pp", "accuracy drop (pp, median)"), ("tflite_bytes", ".tflite bytes"),
          ("latency_ratio", "latency quantized/control (batch 1)"))


def plot(model: str, records: Sequence[dict], out_dir: Path, save: Callable) -> Optional[Path]:
    """latency-<model>.png: drop, bytes and latency ratio against N side by side, a colour per bit
    width and a line style per order; every timed run's ratio as a point with its 95% interval."""
    if not timed(records):
        return None
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15.0, 4.0), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    groups = defaultdict(list)
    for r in records:
        if r.get("order") not in ("mixed", "ends8", "type"):  # their n is a byte budget or 0, not a unit count
            groups[(r.get("weight_bits") or 0, str(r.get("order")))].append(r)
    bits_order = sorted({bits for bits, _ in groups})
    for (bits, order), rows in sorted(groups.items()):
        colour = colours[bits_order.index(bits) % len(colours)]
        for ax, (field, _) in zip(axes[0], PANELS):
            ns, ys = _series(rows, field)
            ax.plot(ns, ys, ORDER_STYLES.get(order, "-"), marker="o", ms=3, color=colour, label=f"w{bits} {order}")
        runs = timed(rows)
        lows = [r["latency_ratio"] - (as_number((r.get("latency_ratio_ci95") or [None])[0]) or r["latency_ratio"]) for r in runs]
        highs = [(upper_of(r) or r["latency_ratio"]) - r["latency_ratio"] for r in runs]
        axes[0][2].errorbar([r["n"] for r in runs], [r["latency_ratio"] for r in runs], yerr=[lows, highs],
                            fmt=".", color=colour, alpha=0.5, elinewidth=0.8)
    axes[0][2].axhline(1.0, color="grey", lw=0.6)
    for ax, (_, label) in zip(axes[0], PANELS):
        ax.set(title=f"{model}: {label}", xlabel="N (units quantized)")
        ax.legend(fontsize=7)
    return save(fig, Path(out_dir) / f"latency-{re.sub(r'[^A-Za-z0-9_.-]+', '_', str(model)) or '_'}.png")


def section(model: str, records: Sequence[dict], out_dir: Path, plots_dir: str, save: Callable) -> tuple:
    """(markdown lines, plot paths) of the model's latency subsection; nothing when nothing was timed."""
    lines = table(records)
    if not lines:
        return [], []
    path = plot(model, records, out_dir, save)
    lines = ["### Inference latency vs N", ""] + lines + [""]
    if path is not None:
        lines += [f"![{path.stem}]({plots_dir}/{path.name})", ""]
    return lines, [path] if path is not None else []
