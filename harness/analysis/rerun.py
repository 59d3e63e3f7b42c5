"""How far the numbers of one run moved in another: the same cases re-measured on another machine,
or with other numerics (TF_ENABLE_ONEDNN_OPTS=0). Pure.

Per case: the drop in each run and the difference. Per model: how far single cases moved (median
and largest absolute move) next to the seed-to-seed SD of the drop in the first run, so a reader
sees whether "another machine" moves a drop more or less than another seed does.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from harness.results.baseline import as_number, entries_from_records, noise_group, pooled_noise
from harness.results.records import MEASURED



@dataclass(frozen=True)
class Move:
    case_id: str
    model: str
    weight_bits: int
    drop_a: float
    drop_b: float
    control_a: float
    control_b: float

    @property
    def delta(self) -> float:
        return self.drop_b - self.drop_a


def moves(records_a: Iterable[dict], records_b: Iterable[dict]) -> list:
    """One Move per case measured in both runs with the same config hash."""
    first = {r["case_id"]: r for r in records_a if r.get("status") in MEASURED}
    out = []
    for r in records_b:
        a = first.get(r.get("case_id"))
        if a is None or r.get("status") not in MEASURED or a.get("config_hash") != r.get("config_hash"):
            continue
        numbers = [as_number(v) for v in (a.get("accuracy_drop_pp"), r.get("accuracy_drop_pp"),
                                          a.get("control_accuracy"), r.get("control_accuracy"))]
        if None not in numbers:
            out.append(Move(r["case_id"], r.get("model"), r.get("weight_bits"), *numbers))
    return sorted(out, key=lambda m: m.case_id)


def summary(records_a: Sequence[dict], records_b: Sequence[dict]) -> list:
    """Per (model, bits): cases, median and max |move| of the drop (pp), controls that moved, and
    the seed-to-seed SD of the drop in run A; one dict per group."""
    by_group = defaultdict(list)
    for move in moves(records_a, records_b):
        by_group[noise_group(move.model, move.weight_bits)].append(move)
    noise = pooled_noise(entries_from_records(records_a).values())
    rows = []
    for group in sorted(by_group):
        deltas = np.abs([m.delta for m in by_group[group]])
        controls = {round(m.control_b - m.control_a, 6) for m in by_group[group]}
        seed_sd = noise.get(group).sd_pp if group in noise else None
        rows.append({"group": group, "cases": len(deltas), "median_abs_move_pp": float(np.median(deltas)),
                     "max_abs_move_pp": float(np.max(deltas)),
                     "control_moves_pp": sorted(100 * c for c in controls),
                     "seed_sd_pp": seed_sd if seed_sd is None or math.isfinite(seed_sd) else None})
    return rows


def format_summary(rows: Sequence[dict]) -> list:
    lines = [f"{'model/bits':<16} {'cases':>5} {'median |move|':>14} {'max |move|':>11} {'seed SD':>8}  control moves (pp)"]
    for row in rows:
        sd = "-" if row["seed_sd_pp"] is None else f"{row['seed_sd_pp']:.2f}"
        controls = ", ".join(f"{c:+.2f}" for c in row["control_moves_pp"])
        lines.append(f"{row['group']:<16} {row['cases']:>5} {row['median_abs_move_pp']:>14.2f} "
                     f"{row['max_abs_move_pp']:>11.2f} {sd:>8}  {controls}")
    return lines
