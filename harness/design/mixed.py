"""Which units, at which bit width: a greedy sensitivity selection and an exact mixed-precision plan. Pure.

Issue 17. Both work on the units of a model (harness/design/units.py) and a *predicted cost* per unit
and bit width (a sensitivity score, e.g. HAWQ-V2's Hessian trace times quantization noise power,
computed elsewhere: this module knows nothing about where the numbers come from). Bytes come from
harness/design/size.py, so a plan's bytes are exactly what ``size.predict`` says the .tflite stores.

- ``sensitivity_selection``: for the ``sensitivity`` order, the N units that save the most bytes per
  unit of predicted cost at one bit width (greedy knapsack by ratio). Greedy, not optimal: it is the
  *order* the issue asks for, so that sensitivity-N is comparable with last-N at every N. By default
  (``chain=True``) the greedy order runs among ``deployable`` N-sets only, so the converter stores the
  selection as selected (a lone float unit between quantized ones would become INT8).
- ``mixed_plan``: float, INT8 or INT4 per unit, minimising the summed predicted cost under a byte
  budget. Exact: a dynamic programme over units that keeps the Pareto front of (bytes, cost) partial
  plans. A byte-indexed table would need budget-many cells (millions for a CNN); the front keeps only
  plans that no other partial plan beats on both bytes and cost, which is exact because a dominated
  prefix can never complete to a better plan than its dominator completed the same way.
  ``chain=True`` admits only plans the converter deploys as planned (``deployable``: no lone float
  unit between two quantized ones); the front is then kept per chain state, and stays exact.
  ``tied_kinds`` makes every quantized unit of those kinds (conv: ``tied_kinds_of(units)``) share one
  width, solved exactly as the best of one restricted sub-problem per width.
- ``ends_plan``: the literature's default (order ``ends8``): the first and last unit at 8 bits, every
  other unit at 4, conv units included (harness/case/quantize.py gives a conv its own width).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

from harness.design import size
from harness.design.config import QuantConfig, check_bits
from harness.design.units import Unit

FLOAT = "float"
Choice = Union[str, int]  # "float", or a weight bit width 2..8


def unit_bytes(unit: Unit, choice: Choice) -> int:
    """Bytes ``unit`` adds to the .tflite weights at ``choice``: size.py's formula at the storage width
    the bit width deploys as (INT8 for 5-8 bits, packed INT4 for 2-4), so sums match size.predict."""
    if choice == FLOAT:
        return size.unit_bytes(unit, False, 32)
    return size.unit_bytes(unit, True, QuantConfig(check_bits(choice, "choice")).storage_bits)


def plan_bytes(units: Sequence[Unit], choices: Sequence[Choice]) -> int:
    if len(choices) != len(units):
        raise ValueError(f"{len(choices)} choices for {len(units)} units")
    return sum(unit_bytes(u, c) for u, c in zip(units, choices))


def _check_costs(costs: Sequence[float], units: Sequence[Unit], what: str) -> tuple:
    costs = tuple(float(c) for c in costs)
    if len(costs) != len(units):
        raise ValueError(f"{what}: {len(costs)} costs for {len(units)} units")
    bad = [i for i, c in enumerate(costs) if not (math.isfinite(c) and c >= 0)]
    if bad:
        raise ValueError(f"{what}: costs must be finite and >= 0; unit {bad[0]} has {costs[bad[0]]}")
    return costs


def saving_ratio(unit: Unit, cost: float, bits: int) -> float:
    """Bytes saved by quantizing ``unit`` at ``bits``, per unit of predicted cost (free units: inf)."""
    saved = unit_bytes(unit, FLOAT) - unit_bytes(unit, bits)
    if cost > 0:
        return saved / cost
    return math.inf if saved > 0 else 0.0


def sensitivity_order(units: Sequence[Unit], costs: Sequence[float], bits: int = 8) -> tuple:
    """All units, best bytes-per-cost first; equal ratios in graph order (lower unit index first)."""
    costs = _check_costs(costs, units, "sensitivity_order")
    ranked = sorted(zip(units, costs), key=lambda uc: (-saving_ratio(uc[0], uc[1], bits), uc[0].index))
    return tuple(u for u, _ in ranked)


def sensitivity_selection(units: Sequence[Unit], costs: Sequence[float], n: int, bits: int = 8,
                          chain: bool = True) -> tuple:
    """The ``n`` units with the best bytes saved per predicted cost at ``bits``, returned in graph order
    (as select() returns every order). ``costs[i]`` is the predicted cost of quantizing ``units[i]``.

    ``chain`` (the default): the greedy ratio order among ``deployable`` N-sets only. Walk the ranked
    order and take a unit iff some deployable set of exactly ``n`` units holds every unit taken so far,
    this one, and none of the units passed over. When the plain greedy top-``n`` is deployable it is the
    answer unchanged; some deployable N-set always exists (the last N units), so this never fails.
    ``chain=False``: the plain greedy top-``n``, whatever the converter makes of it."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(units):
        raise ValueError(f"N must be in 0..{len(units)} for a model with {len(units)} units, got {n!r}")
    order = sensitivity_order(units, costs, bits)
    greedy = tuple(sorted(order[:n], key=lambda u: u.index))
    picked = {u.index for u in greedy}
    if not chain or deployable([8 if u.index in picked else FLOAT for u in units]):
        return greedy  # a deployable top-n is also what the walk below would return
    position = {u.index: i for i, u in enumerate(units)}
    taken: set = set()
    passed: set = set()
    for unit in order:
        if len(taken) == n:
            break
        if _deployable_n_set_exists(len(units), n, taken | {position[unit.index]}, passed):
            taken.add(position[unit.index])
        else:
            passed.add(position[unit.index])
    return tuple(units[i] for i in sorted(taken))


def _deployable_n_set_exists(length: int, n: int, forced_in: set, forced_out: set) -> bool:
    """Whether a ``deployable`` choice of exactly ``n`` quantized positions out of ``length`` holds every
    position of ``forced_in`` and none of ``forced_out``. Exact: a DP over positions whose states are
    (quantized so far, chain state), at most (L + 1) x 3 of them."""
    states = {(0, FREE)}
    for i in range(length):
        allowed = ([] if i in forced_in else [FLOAT]) + ([] if i in forced_out else [8])
        states = {(count + (choice != FLOAT), after) for count, state in states for choice in allowed
                  if count + (choice != FLOAT) <= n and (after := next_state(state, choice, True)) is not None}
    return any(count == n for count, _ in states)


@dataclass(frozen=True)
class FrontierPoint:
    n: int
    units: tuple  # unit indices quantized, graph order
    weight_bytes: int
    predicted_cost: float


def selection_frontier(units: Sequence[Unit], costs: Sequence[float], bits: int = 8, chain: bool = True) -> tuple:
    """sensitivity-N for every N in 0..L: bytes and summed predicted cost, each N the selection
    ``sensitivity_selection(units, costs, N, bits, chain)`` makes (the one a ``sensitivity`` case runs).
    With ``chain`` the points need not be nested: the deployable N+1-set may drop a unit of the N-set."""
    costs = _check_costs(costs, units, "selection_frontier")
    cost_of = {u.index: c for u, c in zip(units, costs)}
    points = []
    for n in range(len(units) + 1):
        chosen = {u.index for u in sensitivity_selection(units, costs, n, bits, chain)}
        choices = [bits if u.index in chosen else FLOAT for u in units]
        points.append(FrontierPoint(n, tuple(sorted(chosen)), plan_bytes(units, choices),
                                    sum(cost_of[i] for i in chosen)))
    return tuple(points)


@dataclass(frozen=True)
class MixedPlan:
    choices: tuple  # per unit, graph order: "float" or the weight bit width
    weight_bytes: int  # exactly size.py's weight bytes of this plan
    predicted_cost: float
    budget_bytes: int

    def units_at(self, choice: Choice) -> tuple:
        """Positions (in the units sequence) of the units at ``choice``."""
        return tuple(i for i, c in enumerate(self.choices) if c == choice)

    @property
    def tag(self) -> str:
        """Compact per-unit code, e.g. 'F848': F float, digits the bit width."""
        return "".join("F" if c == FLOAT else str(c) for c in self.choices)


def _options(units: Sequence[Unit], costs_by_bits: Mapping[int, Sequence[float]]) -> list:
    """Per unit, the (choice, bytes, cost) it may take: float at cost 0, and each given bit width."""
    if not costs_by_bits:
        raise ValueError("mixed_plan needs costs for at least one bit width, e.g. {8: [...], 4: [...]}")
    checked = {check_bits(b, "plan bits"): _check_costs(c, units, f"{b}-bit costs")
               for b, c in sorted(costs_by_bits.items())}
    return [[(FLOAT, unit_bytes(u, FLOAT), 0.0)] + [(b, unit_bytes(u, b), checked[b][i]) for b in checked]
            for i, u in enumerate(units)]


def _pareto(states: list) -> list:
    """Keep the states no other state beats on both bytes and cost (ties: the fewer bytes, then first)."""
    states.sort(key=lambda s: (s[0], s[1]))
    front, best = [], math.inf
    for state in states:
        if state[1] < best:
            front.append(state)
            best = state[1]
    return front


# States of a partial plan for the chain rule (``mixed_plan(..., chain=True)``): FREE (no quantized unit
# yet, or at least two float units since the last one), QUANT (the last unit is quantized), LONE (one
# float unit right after a quantized one: the next unit may not be quantized).
FREE, QUANT, LONE = 0, 1, 2


def next_state(state: int, choice: Choice, chain: bool):
    """The state after ``choice``; None when the chain rule forbids it (a lone float unit between two
    quantized ones). Without ``chain`` every plan is allowed."""
    if not chain:
        return FREE
    if choice == FLOAT:
        return LONE if state == QUANT else FREE
    return None if state == LONE else QUANT


def deployable(choices: Sequence[Choice]) -> bool:
    """False when a single float unit sits between two quantized units: the converter receives it with a
    fake-quantized input (the previous unit's output) and a fake-quantized output (tfmot quantizes the
    output of the layer feeding an annotated one), and stores it as INT8 (measured with the mlp: a plan
    8F8FF deployed as INT8 INT8 INT8 FLOAT32 FLOAT32; 8FF8F and 8444F deployed as planned)."""
    state = FREE
    for choice in choices:
        state = next_state(state, choice, True)
        if state is None:
            return False
    return True


# Unit kinds whose weight layers cannot take a width of their own beside other widths: a Conv2D with a
# QuantizeConfig of its own loses tfmot's Conv+BN folding (harness/case/quantize.py::_unit_config), so every
# quantized conv unit of a plan must take the scheme's width, one width for all of them.
UNIFORM_KINDS = ("conv",)


def tied_kinds_of(units: Sequence[Unit]) -> tuple:
    """The kinds of ``units`` whose quantized units must share one width (``mixed_plan(tied_kinds=...)``)."""
    present = {u.kind for u in units}
    return tuple(k for k in UNIFORM_KINDS if k in present)


def mixed_plan(units: Sequence[Unit], costs_by_bits: Mapping[int, Sequence[float]], budget_bytes: int,
               chain: bool = False, tied_kinds: Sequence[str] = ()) -> MixedPlan:
    """The plan (float or one of the given bit widths per unit) of least summed predicted cost whose
    weight bytes are <= ``budget_bytes``. Exact. ``costs_by_bits[b][i]``: predicted cost of ``units[i]``
    at b bits; float costs 0. An unreachable budget raises a ValueError naming the smallest plan's bytes.
    ``chain``: only ``deployable`` plans (units in graph order as one chain, as the zoo's Dense stacks are):
    the Pareto front is then kept per chain state, which keeps it exact.
    ``tied_kinds``: every *quantized* unit of these kinds takes one common width (``tied_kinds_of(units)``
    gives the ones a model needs). Solved as the best, over each width w, of the plan in which those units
    may only be float or w. Still exact: a plan meeting the constraint quantizes those units at one w (or
    at none, which every w's sub-problem admits), so it is feasible in w's sub-problem, and every
    sub-problem's plans meet the constraint; the best of the exact sub-optima is the constrained optimum."""
    options = _options(units, costs_by_bits)
    kinds = set(tied_kinds)
    tied = {i for i, u in enumerate(units) if u.kind in kinds}
    if not tied:
        variants = [options]
    else:  # one sub-problem per width: the tied units may only be float or that width
        variants = [[[o for o in opts if o[0] in (FLOAT, width)] if i in tied else opts
                     for i, opts in enumerate(options)] for width in sorted(costs_by_bits)]
    smallest = min(sum(min(o[1] for o in opts) for opts in variant) for variant in variants)
    if smallest > budget_bytes:
        what = "every unit at its smallest width" + (f", {'/'.join(tied_kinds)} units at one width" if tied else "")
        raise ValueError(f"size budget {budget_bytes} bytes is infeasible: the minimum achievable is "
                         f"{smallest} bytes ({what})")
    solved = [s for s in (_solve(variant, budget_bytes, chain) for variant in variants) if s is not None]
    best_bytes, best_cost, choices = min(solved, key=lambda s: (s[1], s[0]))  # ties: the first width
    return MixedPlan(choices, best_bytes, best_cost, budget_bytes)


def deployable_plan(units: Sequence[Unit], costs_by_bits: Mapping[int, Sequence[float]], budget_bytes: int) -> MixedPlan:
    """The plan a mixed case runs and the planner predicts: deployable chains, with the widths a model's
    kinds must share (its conv units: harness/case/quantize.py) tied."""
    return mixed_plan(units, costs_by_bits, budget_bytes, chain=True, tied_kinds=tied_kinds_of(units))


def ends_plan(units: Sequence[Unit], outer_bits: int = 8, inner_bits: int = 4) -> MixedPlan:
    """The literature's default plan (DoReFa, PACT, LSQ keep the first and last layers at 8 bits or float):
    the first and the last unit at ``outer_bits``, every other unit at ``inner_bits``. No scores: its
    predicted cost is 0 and its budget its own bytes (exactly size.py's). Needs at least 2 units."""
    if len(units) < 2:
        raise ValueError(f"the ends plan needs a first and a last unit; this model has {len(units)}")
    outer, inner = check_bits(outer_bits, "outer bits"), check_bits(inner_bits, "inner bits")
    choices = tuple(outer if i in (0, len(units) - 1) else inner for i in range(len(units)))
    size_of = plan_bytes(units, choices)
    return MixedPlan(choices, size_of, 0.0, size_of)


def _solve(options: list, budget_bytes: int, chain: bool):
    """(bytes, cost, choices) of the least-cost plan over per-unit ``options`` within the budget, or None
    when even the smallest plan does not fit. The Pareto DP described in the module docstring."""
    # least bytes the units after position i can still take: prunes prefixes that cannot fit
    rest = [0] * (len(options) + 1)
    for i in range(len(options) - 1, -1, -1):
        rest[i] = rest[i + 1] + min(o[1] for o in options[i])
    if rest[0] > budget_bytes:
        return None
    # a state: (bytes, cost, choices as a linked list (choice, previous), chain state): extending is O(1);
    # all-quantized plans are deployable, so some state always survives
    front = [(0, 0.0, None, FREE)]
    for i, unit_options in enumerate(options):
        grown = [(b + ob, c + oc, (choice, link), after) for b, c, link, state in front
                 for choice, ob, oc in unit_options
                 if b + ob + rest[i + 1] <= budget_bytes and (after := next_state(state, choice, chain)) is not None]
        front = [s for kind in (FREE, QUANT, LONE) for s in _pareto([g for g in grown if g[3] == kind])]
    best_bytes, best_cost, link, _ = min(front, key=lambda s: (s[1], s[0]))
    choices = []
    while link is not None:
        choices.append(link[0])
        link = link[1]
    return best_bytes, best_cost, tuple(reversed(choices))
