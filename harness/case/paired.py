"""Paired evidence of one case: the control and the quantized model scored on the same test examples. Pure.

Each test example falls in one cell of a 2x2 table: both right (a), control right and quantized
wrong (b), quantized right and control wrong (c), both wrong (d). The accuracy drop is
(b - c) / n: only the discordant examples carry information about it, which is why a paired
interval is much narrower than two independent binomial intervals would be.

- Interval: Newcombe (1998), method 10, the square-and-add combination of two Wilson score
  intervals with the phi correlation of the 2x2 table. Good coverage down to small n, never
  outside [-1, 1], and defined when b = c = 0.
- Test: the exact McNemar test, a two-sided binomial test of b against b + c with p = 1/2.

Ties. INT8 logits often tie for the top score, and argmax returns the lowest tied class index: a
quantized model then gains or loses accuracy by class order, not by quantization (on Fashion-MNIST it
turned "shirt", class 6, into lower classes). Accuracy is therefore tie-aware: an example whose top
score is shared by k classes including the true one counts 1/k, its expected correctness under
random tie-breaking. The 2x2 table holds the expected counts (fractions where there are ties; the
exact test uses them rounded), so without ties everything is exactly as above. What a device's
argmax gives is kept beside it as the ``deployed`` accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedCounts:
    """Counts of the 2x2 table; expected counts (floats) when some top scores tie."""

    both_right: float
    control_only: float  # control right, quantized wrong: costs accuracy
    quant_only: float  # quantized right, control wrong
    both_wrong: float

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


@dataclass(frozen=True)
class TopSet:
    """Which classes share each example's top score, against the true class."""

    labels: np.ndarray  # argmax: the lowest tied class index, what a device's argmax returns
    size: np.ndarray  # how many classes share the top score (1: no tie)
    hit: np.ndarray  # whether the true class is among them
    right: np.ndarray  # whether the argmax is the true class (the deployed model's correctness)

    @property
    def score(self) -> np.ndarray:
        """Expected correctness of each example under random tie-breaking: hit / size."""
        return self.hit / self.size

    @property
    def ties(self) -> int:
        return int(np.sum(self.size > 1))


def top_set(outputs, y_true) -> TopSet:
    """The top-score classes of every row of ``outputs`` (logits or probabilities, one row per example)."""
    out, y = np.asarray(outputs), np.asarray(y_true).reshape(-1)
    if out.ndim != 2 or len(out) != len(y):
        raise ValueError(f"expected outputs of shape (examples, classes) for {len(y)} examples, got {out.shape}")
    is_top = out == out.max(axis=-1, keepdims=True)
    labels = np.argmax(out, axis=-1)
    return TopSet(labels, is_top.sum(axis=-1), is_top[np.arange(len(y)), y], labels == y)


def expected_counts(control: TopSet, quant: TopSet) -> PairedCounts:
    """The 2x2 table in expectation over both models' random tie-breaking (independent); the
    integer table of ``counts`` when nothing ties."""
    c, q = control.score, quant.score
    if len(c) != len(q) or len(c) == 0:
        raise ValueError(f"paired scores need equal, non-zero lengths, got {len(c)} and {len(q)}")
    return PairedCounts(float(np.sum(c * q)), float(np.sum(c * (1 - q))), float(np.sum((1 - c) * q)),
                        float(np.sum((1 - c) * (1 - q))))


def wilson(successes: float, n: float, confidence: float = CONFIDENCE) -> tuple:
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


def mcnemar_exact(control_only: float, quant_only: float) -> float:
    """Two-sided exact McNemar p-value (of the expected counts, rounded); 1.0 without discordant examples."""
    control_only, quant_only = round(control_only), round(quant_only)
    discordant = control_only + quant_only
    if discordant == 0:
        return 1.0
    return float(min(1.0, 2 * stats.binom.cdf(min(control_only, quant_only), discordant, 0.5)))


def evidence(y_true, control_pred, quant_pred, confidence: float = CONFIDENCE) -> dict:
    """The record fields of a case's paired evidence from predicted labels (no ties to account for)."""
    return evidence_of(counts(y_true, control_pred, quant_pred), confidence)


def tie_aware_evidence(control: TopSet, quant: TopSet, confidence: float = CONFIDENCE) -> dict:
    """The record fields of a case's paired evidence, tie-aware, with the deployed (argmax) accuracies
    and how many examples tie for the top score in each model."""
    n = len(control.score)
    control_deployed, quant_deployed = float(np.mean(control.right)), float(np.mean(quant.right))
    return {**evidence_of(expected_counts(control, quant), confidence),
            "control_accuracy": float(np.sum(control.score) / n), "quant_accuracy": float(np.sum(quant.score) / n),
            "control_accuracy_deployed": control_deployed, "quant_accuracy_deployed": quant_deployed,
            "deployed_drop_pp": 100.0 * (control_deployed - quant_deployed),
            "control_ties": control.ties, "quant_ties": quant.ties}


def evidence_of(table: PairedCounts, confidence: float = CONFIDENCE) -> dict:
    """Drop, interval (percentage points) and exact test of a paired table."""
    low, high = newcombe_interval(table, confidence)
    return {
        "n_test": int(round(table.n)),
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
