"""The case grid of a tier: every (model, selection, method, bits, seed) case, in a stable order. Pure."""

from __future__ import annotations

from harness.spec import registry
from harness.spec.config import Case, QuantConfig, RunOptions, Selection


def cases_for(opts: RunOptions) -> list:
    """Every (model, selection, bits, seed) case of the tier, in a stable order."""
    cases = []
    for spec in registry.REGISTRY.values():
        if opts.tier not in spec.tiers or (opts.models and spec.name not in opts.models):
            continue
        tier = spec.tier(opts.tier)
        for order in opts.orders or tier.orders:
            for selection in _selections(spec, tier, order):
                for method in opts.methods or tier.methods:
                    for bits in opts.bits or tier.bits:
                        if method == "ptq" and bits != 8:
                            continue
                        for seed in opts.seeds or tier.seeds:
                            cases.append(Case(spec.name, selection, QuantConfig(bits, method=method), opts.tier,
                                              seed, opts.strategy, opts.workers))
    return cases


def _selections(spec, tier, order) -> list:
    if order == "type":
        return [Selection("type", kind=kind) for kind in spec.unit_kinds]
    if order == "single":
        return [Selection("single", k) for k in range(spec.num_units)]
    if order == "first":  # first 0 and first L are the same models as last 0 and last L
        return [Selection(order, n) for n in tier.n_values if 0 < n < spec.num_units]
    # last and sensitivity: every n up to L. sensitivity-0 and -L equal last-0 and -L, but they are kept
    # so that each order's curve is complete on its own at the same N values as last-N.
    return [Selection(order, n) for n in tier.n_values if n <= spec.num_units]
