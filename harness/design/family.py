"""The pre-registered test family of last vs first: which comparisons count, each with its one
matching, declared before the data are seen. Pure data, no TensorFlow.

Two pairs of orders: ``first``/``last`` over every unit, and ``first-inner``/``last-inner`` (issue 32,
item b) over the inner units only, the first and the last unit held out of both, so that neither side
is one special layer. One family: Holm adjusts over the counted tests of both pairs.

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
WHOLE = ("first", "last")
# issue 32, item b: last-N against first-N among the inner units, the first and the last unit held out of
# both orders, so that neither side is one special layer (cnn's 1-channel first conv, the logits)
INNER = ("first-inner", "last-inner")
HELD_OUT = {WHOLE: 0, INNER: 2}  # units of a model that neither order of the pair may quantize


@dataclass(frozen=True)
class OrderComparison:
    """One pre-registered test: drop_first - drop_last of one model at one width and method."""

    model: str
    weight_bits: int
    method: str
    matching: str  # "n" or "share"
    orders: tuple = WHOLE  # (first order, last order): WHOLE or INNER

    def __post_init__(self):
        if self.matching not in MATCHINGS:
            raise ValueError(f"matching must be one of {MATCHINGS}, got {self.matching!r}")
        if self.orders not in HELD_OUT:
            raise ValueError(f"orders must be one of {tuple(HELD_OUT)}, got {self.orders!r}")

    @property
    def key(self) -> tuple:
        return (self.model, self.weight_bits, self.method, self.orders)

    @property
    def name(self) -> str:
        inner = " inner" if self.orders == INNER else ""
        return (f"{self.model}{inner} W{self.weight_bits} {self.method.upper()} "
                f"({'share' if self.matching == 'share' else 'N'})")


def _each(model: str, matching: str, groups=((4, "qat"), (8, "qat"), (8, "ptq")), orders: tuple = WHOLE) -> tuple:
    # the reference tier's groups: W8 and W4 QAT, W8 PTQ (harness/design/registry.py REFERENCE)
    return tuple(OrderComparison(model, bits, method, matching, orders) for bits, method in groups)


def share_brackets(params, n_values, held_out: int = 0) -> bool:
    """The rule that declares "share": some last-N share (0 < N < all) lies within the first order's
    measured shares, among the units both orders may quantize (``held_out`` = 2: the first and last unit
    are left out of both). ``params``: weights per unit, graph order; ``n_values``: the tier's N."""
    inside = list(params[1:-1] if held_out else params)
    total, count = sum(params), len(inside)
    ns = [n for n in n_values if 0 < n < count]
    first = [sum(inside[:n]) / total for n in ns]
    last = [sum(inside[count - n:]) / total for n in ns]
    return bool(first) and any(min(first) <= f <= max(first) for f in last)


@dataclass(frozen=True)
class Family:
    """The comparisons Holm adjusts over (those whose seeds can reach significance)."""

    name: str
    comparisons: tuple

    def declared(self, model: str, weight_bits, method: str, orders: tuple = WHOLE) -> Optional[OrderComparison]:
        return next((c for c in self.comparisons if c.key == (model, weight_bits, method, orders)), None)

    def covers(self, model: str, orders: tuple = WHOLE) -> bool:
        return any(c.model == model and c.orders == orders for c in self.comparisons)

    def for_group(self, model: str, weight_bits, method: str, orders: tuple = WHOLE) -> tuple:
        """(comparison, declared): the declared comparison; for a model the family does not name for this
        pair of orders, the default one on N (declared False); (None, False) for an undeclared group of a
        declared model and pair (reported, never counted)."""
        found = self.declared(model, weight_bits, method, orders)
        if found is not None:
            return found, True
        if self.covers(model, orders):
            return None, False
        return OrderComparison(model, weight_bits, method, DEFAULT_MATCHING, orders), False


# Inner units (params per unit, tests/test_position_orders.py checks share_brackets on them): mlp 33,024 |
# 32,896 | 16,512: first-inner 1-2 hold 18-36% of the weights, last-inner-2 27%; cnn 18,496 | 73,856 |
# 16,512: first-inner 17-84%, last-inner-2 82%; resnet20's 18 convs at N = 1, 3, 6, 10: first-inner
# 0.9-17%, last-inner-1 13.7%. Each brackets a last-inner share: "share" for all three.
LAST_VS_FIRST = Family("last vs first, whole and inner (reference tier)",
                       _each("mlp", "n") + _each("cnn", "share")
                       + _each("resnet20", "share", ((4, "qat"), (8, "qat")))  # its reference tier: QAT only
                       + _each("mlp", "share", orders=INNER) + _each("cnn", "share", orders=INNER)
                       + _each("resnet20", "share", ((4, "qat"), (8, "qat")), orders=INNER))
