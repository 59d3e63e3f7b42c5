"""The pre-registered test family of last vs first: which comparisons count, each with its one
matching, declared before the data are seen. Pure data, no TensorFlow.

Why declared: the order test can match the two orders on N or on the share of weights quantized.
Testing both and adjusting over both counts near-duplicates (one seed's drops, twice) and lets the
data pick the matching afterwards. Here each comparison names one matching, chosen from the
architecture alone: "share" when both orders cover the matched parameter share (the first order's
share at its measured N brackets last-N's share at some 0 < N < all), else "n".

- mlp (784-128-256-128-128-10): first-1 already holds 55% of the weights and last-4 only 46%, so no
  last-N share lies within the first order's: "n".
- cnn and resnet20: the big units sit in the middle and end, the shares interleave: "share".

A model not declared here (a user's model, a synthetic test model) gets every (bits, method) group of
the run with the matching "n" (N is always matchable), and the report says it was not declared.
``harness.analysis.order_test`` counts a declared comparison in Holm only when its seeds can reach
significance at all (the exact sign-flip test with k pairs gives p >= 2/2^k).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

MATCHINGS = ("n", "share")
DEFAULT_MATCHING = "n"


@dataclass(frozen=True)
class OrderComparison:
    """One pre-registered test: drop_first - drop_last of one model at one width and method."""

    model: str
    weight_bits: int
    method: str
    matching: str  # "n" or "share"
    orders: tuple = ("first", "last")

    def __post_init__(self):
        if self.matching not in MATCHINGS:
            raise ValueError(f"matching must be one of {MATCHINGS}, got {self.matching!r}")

    @property
    def key(self) -> tuple:
        return (self.model, self.weight_bits, self.method)

    @property
    def name(self) -> str:
        return f"{self.model} W{self.weight_bits} {self.method.upper()} ({'share' if self.matching == 'share' else 'N'})"


def _each(model: str, matching: str, groups=((4, "qat"), (8, "qat"), (8, "ptq"))) -> tuple:
    # the reference tier's groups: W8 and W4 QAT, W8 PTQ (harness/design/registry.py REFERENCE)
    return tuple(OrderComparison(model, bits, method, matching) for bits, method in groups)


@dataclass(frozen=True)
class Family:
    """The comparisons Holm adjusts over (those whose seeds can reach significance)."""

    name: str
    comparisons: tuple

    def declared(self, model: str, weight_bits, method: str) -> Optional[OrderComparison]:
        return next((c for c in self.comparisons if c.key == (model, weight_bits, method)), None)

    def covers(self, model: str) -> bool:
        return any(c.model == model for c in self.comparisons)

    def for_group(self, model: str, weight_bits, method: str) -> tuple:
        """(comparison, declared): the declared comparison; for a model the family does not name, the
        default one on N (declared False); (None, False) for an undeclared group of a declared model
        (reported, never counted)."""
        found = self.declared(model, weight_bits, method)
        if found is not None:
            return found, True
        if self.covers(model):
            return None, False
        return OrderComparison(model, weight_bits, method, DEFAULT_MATCHING), False


LAST_VS_FIRST = Family("last vs first (reference tier)",
                       _each("mlp", "n") + _each("cnn", "share")
                       + _each("resnet20", "share", ((4, "qat"), (8, "qat"))))  # its reference tier: QAT only
