"""Sharding a sweep: a deterministic, cost-balanced split of the selected cases into K shards. Pure.

The cost model is relative work, in "sample passes x model size", read from the registry:

- model size: prod(input_shape) x num_units (a rough proxy for the parameters a step touches);
- per case: (finetune_steps x batch_size x 2 + test_size x 2) x model size (the QAT model and its
  float control are each fine-tuned and evaluated);
- per (model, pretrain seed): pretrain_epochs x train_size x model size, charged once and spread evenly
  over the selected cases that share that pre-trained model (the pre-training runs once per shard that
  needs it; spreading it keeps the cost of a case additive, so the split stays a pure assignment).

The split is greedy longest-processing-time: cases by decreasing cost (ties by case id), each to the
shard with the least cost so far (ties by shard index). Every case lands in exactly one shard, and the
most loaded shard costs at most total / K + the largest single case cost.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

from harness.design import registry

DEFAULT_TRAIN_SIZE = 50_000  # a TierConfig with train_size None trains on the whole split
DEFAULT_TEST_SIZE = 10_000


def model_size(spec) -> int:
    return max(1, math.prod(spec.input_shape)) * max(1, spec.num_units)


def case_cost(case, spec=None) -> float:
    """Fine-tuning plus evaluation work of one case (QAT model and float control), without pre-training."""
    spec = spec or registry.get(case.model)
    tier = spec.tier(case.tier)
    test = tier.test_size or DEFAULT_TEST_SIZE
    return float(model_size(spec) * (2 * tier.finetune_steps * tier.batch_size + 2 * test))


def pretrain_cost(spec, tier_name: str) -> float:
    tier = spec.tier(tier_name)
    return float(model_size(spec) * tier.pretrain_epochs * (tier.train_size or DEFAULT_TRAIN_SIZE))


def costs(cases: Sequence, lookup: Callable = None) -> dict:
    """case id -> expected cost, with each pre-training spread over the cases that share it."""
    lookup = lookup or registry.get
    sharing: dict = {}
    for case in cases:
        spec = lookup(case.model)
        key = (case.model, case.tier, spec.tier(case.tier).pretrain_seed(case.seed))
        sharing.setdefault(key, []).append(case)
    result = {}
    for (model, tier, _seed), group in sharing.items():
        spec = lookup(model)
        share = pretrain_cost(spec, tier) / len(group)
        for case in group:
            result[case.id] = case_cost(case, spec) + share
    return result


def assign(cost_by_id: dict, shards: int) -> list:
    """Greedy LPT: a list of K sets of case ids that together hold every id exactly once."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    loads = [0.0] * shards
    parts: list = [set() for _ in range(shards)]
    for case_id in sorted(cost_by_id, key=lambda i: (-cost_by_id[i], i)):
        target = min(range(shards), key=lambda k: (loads[k], k))
        loads[target] += cost_by_id[case_id]
        parts[target].add(case_id)
    return parts


def shard_ids(cases: Iterable, index: int, shards: int, lookup: Callable = None) -> frozenset:
    """The ids of the cases that shard ``index`` of ``shards`` runs."""
    if not 0 <= index < shards:
        raise ValueError(f"shard index must be in 0..{shards - 1}, got {index}")
    return frozenset(assign(costs(list(cases), lookup), shards)[index])
