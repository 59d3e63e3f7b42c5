"""The case grid of a tier: every (model, selection, method, bits, seed) case, in a stable order. Pure."""

from __future__ import annotations

from harness.design import registry
from harness.design.config import (ENDS_BITS, INNER_ORDERS, MIXED_BITS, PLAN_ORDERS, Case, QuantConfig, RunOptions,
                                   Selection)


def cases_for(opts: RunOptions) -> list:
    """Every (model, selection, bits, seed) case of the tier, in a stable order. A ``mixed`` case plans
    over MIXED_BITS itself: one QAT case per budget and seed; an ``ends8`` case is one QAT case per seed
    (for both, --qat-bits and PTQ do not apply)."""
    cases = []
    for spec in registry.REGISTRY.values():
        if opts.tier not in spec.tiers or (opts.models and spec.name not in opts.models):
            continue
        tier = spec.tier(opts.tier)
        for order in opts.orders or tier.orders:
            plan = order in PLAN_ORDERS  # one width per unit: QAT only, its narrowest width
            for selection in _selections(spec, tier, order, opts.mixed_budgets):
                for method in opts.methods or tier.methods:
                    if plan and method != "qat":
                        continue
                    for bits in (_plan_bits(order),) if plan else opts.bits or tier.bits_of(order):
                        if method == "ptq" and bits != 8:
                            continue
                        for seed in opts.seeds or tier.seeds:
                            cases.append(Case(spec.name, selection, QuantConfig(bits, method=method), opts.tier,
                                              seed, opts.strategy, opts.workers))
    return cases


def _plan_bits(order: str) -> int:
    return min(MIXED_BITS) if order == "mixed" else min(ENDS_BITS)


def _selections(spec, tier, order, mixed_budgets=()) -> list:
    if order == "mixed":  # a model without budgets (on its tier or --qat-mixed-budgets) has no mixed case
        return [Selection("mixed", b) for b in mixed_budgets or tier.mixed_budgets]
    if order == "ends8":  # one plan per model (and seed); it needs a first and a last unit
        return [Selection("ends8")] if spec.num_units >= 2 else []
    if order in INNER_ORDERS:  # N among the L-2 inner units, N >= 1: either order's N = 0 quantizes nothing,
        # the same model as last-0 at the same width, method and seed (a second fine-tune to measure 0 again);
        # first-inner also skips L-2, which quantizes the same inner units as last-inner L-2
        inner = spec.num_units - 2
        return [Selection(order, n) for n in tier.n_values
                if 1 <= n <= inner and not (order == "first-inner" and n == inner)]
    if order == "type":
        return [Selection("type", kind=kind) for kind in spec.unit_kinds]
    if order == "single":
        return [Selection("single", k) for k in range(spec.num_units)]
    if order == "first":  # first 0 and first L are the same models as last 0 and last L
        return [Selection(order, n) for n in tier.n_values if 0 < n < spec.num_units]
    # last and sensitivity: every n up to L. sensitivity-0 and -L equal last-0 and -L, but they are kept
    # so that each order's curve is complete on its own at the same N values as last-N.
    return [Selection(order, n) for n in tier.n_values if n <= spec.num_units]


def check_mixed_budgets(opts: RunOptions) -> None:
    """--qat-orders with mixed needs a byte budget from somewhere: a ValueError (one line) when no
    selected model's tier declares one and --qat-mixed-budgets is not given (else: silently no case)."""
    if "mixed" not in (opts.orders or ()) or opts.mixed_budgets:
        return
    selected = [spec for spec in registry.REGISTRY.values()
                if opts.tier in spec.tiers and (not opts.models or spec.name in opts.models)]
    if selected and not any(spec.tier(opts.tier).mixed_budgets for spec in selected):
        raise ValueError(f"--qat-orders mixed: no selected model declares mixed budgets on the {opts.tier} tier; "
                         "give them with --qat-mixed-budgets BYTES,...")
