"""Paired evidence of one case: the control and the quantized model scored on the same test examples. Pure.

Each test example falls in one cell of a 2x2 table: both right (a), control right and quantized
wrong (b), quantized right and control wrong (c), both wrong (d). The accuracy drop is
(b - c) / n: only the discordant examples carry information about it, which is why a paired
interval is much narrower than two independent binomial intervals would be.

- Interval: Newcombe (1998), method 10, the square-and-add combination of two Wilson score
  intervals with the phi correlation of the 2x2 table. Good coverage down to small n, never
  outside [-1, 1], and defined when b = c = 0.
- Test: the exact McNemar test, a two-sided binomial test of b against b + c with p = 1/2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedCounts:
    both_right: int
    control_only: int  # control right, quantized wrong: costs accuracy
    quant_only: int  # quantized right, control wrong
    both_wrong: int

    @property
    def n(self) -> int:
        return self.both_right + self.control_only + self.quant_only + self.both_wrong

    @property
    def drop(self) -> float:
        """Control accuracy minus quantized accuracy, as a fraction."""
        return (self.control_only - self.quant_only) / self.n if self.n else math.nan


def counts(y_true, control_pred, quant_pred) -> PairedCounts:
    """The 2x2 table of the two models' correctness on the same examples."""
    y, c, q = (np.asarray(v).reshape(-1) for v in (y_true, control_pred, quant_pred))
    if not len(y) == len(c) == len(q):
        raise ValueError(f"paired predictions need equal lengths, got {len(y)}, {len(c)}, {len(q)}")
    if len(y) == 0:
        raise ValueError("paired predictions: the test split is empty")
    right_c, right_q = c == y, q == y
    return PairedCounts(int(np.sum(right_c & right_q)), int(np.sum(right_c & ~right_q)),
                        int(np.sum(~right_c & right_q)), int(np.sum(~right_c & ~right_q)))


def wilson(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple:
    """Wilson score interval of a binomial proportion."""
    if n <= 0:
        raise ValueError(f"n must be > 0, got {n}")
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(table: PairedCounts, confidence: float = CONFIDENCE) -> tuple:
    """(low, high) of p_control - p_quant, as fractions (Newcombe 1998, method 10)."""
    a, b, c, d, n = table.both_right, table.control_only, table.quant_only, table.both_wrong, table.n
    if n == 0:
        raise ValueError("paired interval of an empty table")
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, confidence)
    l2, u2 = wilson(a + c, n, confidence)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(margins) if margins > 0 else 0.0
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    theta = p1 - p2
    return max(-1.0, theta - delta), min(1.0, theta + epsilon)


def mcnemar_exact(control_only: int, quant_only: int) -> float:
    """Two-sided exact McNemar p-value; 1.0 when there is no discordant example."""
    discordant = control_only + quant_only
    if discordant == 0:
        return 1.0
    return float(min(1.0, 2 * stats.binom.cdf(min(control_only, quant_only), discordant, 0.5)))


def evidence(y_true, control_pred, quant_pred, confidence: float = CONFIDENCE) -> dict:
    """The record fields of a case's paired evidence (drop and interval in percentage points)."""
    table = counts(y_true, control_pred, quant_pred)
    low, high = newcombe_interval(table, confidence)
    return {
        "n_test": table.n,
        "discordant": {"control_only": table.control_only, "quant_only": table.quant_only},
        "paired_drop_pp": 100.0 * table.drop,
        "drop_ci95_pp": [100.0 * low, 100.0 * high],
        "mcnemar_p": mcnemar_exact(table.control_only, table.quant_only),
        "drop_within_noise": bool(low <= 0.0 <= high),
    }


def drop_label(drop_pp, interval) -> str:
    """'0.40 [-0.21, 1.02] ~' where '~' marks a drop whose interval contains 0 (inside the noise)."""
    if drop_pp is None or not isinstance(interval, (list, tuple)) or len(interval) != 2:
        return "-" if drop_pp is None else f"{drop_pp:.2f}"
    low, high = interval
    noise = " ~" if low <= 0.0 <= high else ""
    return f"{drop_pp:.2f} [{low:.2f}, {high:.2f}]{noise}"
