"""The latency gate: a configuration whose deployed model got slower, judged like the accuracy gate. Pure.

What is compared is the side-by-side ratio each case measures, quantized/control at batch 1 in LiteRT
(harness/case/latency.py), never an absolute time: the control runs in the same rounds, so a busier
machine slows both. harness/results/baseline_gate.py runs its own tests (each configuration's
contrast against its own noise and the model's shift, one-sided t-tests with Holm's correction) on
log ratios instead of drops: a log makes "rose by 10%" the same distance at every ratio, and the
seed-to-seed spread of log ratios is the noise. A key regresses when its geometric-mean ratio over the seeds both runs timed rose by at
least MIN_RISE and the rise is beyond that noise, and only when this run and the baseline ran on the
same machine kind (CPU model and int8-relevant ISA flags, records.cpu()): int8 kernels differ between
kinds (VNNI or not), so on another kind the rise is reported (status NOTED) and the run does not fail.
With one seed there is no noise estimate: the per-case 95% intervals of the ratio must then be apart.
Keys without latency in both runs (timing off, baselines saved before latency) are not latency-gated.
The latency family has its own false-regression rate (the context's alpha), beside the accuracy gate's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping, Optional

from harness.results.baseline import BaselineEntry
from harness.results.machines import describe_kind, machine_kind

MIN_RISE = 0.10  # the smallest rise of the ratio that counts: below it, noise between sessions on one machine
NOTED = "noted"  # a verdict status: reported, never failing (latency rose on another machine kind)


def view(entries: Mapping) -> dict:
    """The entries with each seed's log latency ratio where the drop was: the accuracy gate's tests
    then run on latency unchanged (a seed without a ratio counts as unmeasured there)."""
    def log_ratio(value):
        ratio = value.latency_ratio
        return dataclasses.replace(value, drop_pp=math.log(ratio) if ratio and ratio > 0 else None)

    return {key: dataclasses.replace(entry, seeds={s: log_ratio(v) for s, v in entry.seeds.items()})
            for key, entry in entries.items()}


def same_machine(baseline_machine, records: Iterable[dict]) -> tuple:
    """(the run's timed records all ran on the baseline's machine kind, what the run ran on)."""
    kinds = {machine_kind((r.get("env") or {}).get("machine")) for r in records
             if r.get("latency_ratio") is not None and isinstance(r.get("env"), dict)}
    base = machine_kind(baseline_machine)
    where = ", ".join(sorted(describe_kind(k) for k in kinds)) or "no timed case"
    return base is not None and kinds == {base}, where


def _intervals_apart(base: BaselineEntry, run: BaselineEntry, seeds) -> bool:
    """One seed, no noise estimate: the run's per-case interval lies above the baseline's, every seed."""
    pairs = [(base.seeds[s], run.seeds[s]) for s in seeds]
    return bool(pairs) and all(o.latency_high is not None and n.latency_low is not None
                               and n.latency_low > o.latency_high for o, n in pairs)


def judge(key: str, test: dict, key_holm: Optional[float], shift_holm: Optional[float], alpha: float,
          min_rise: float, machine: tuple, entries: tuple) -> Optional[tuple]:
    """(status, message) when the key's latency ratio rose by at least ``min_rise`` beyond the noise:
    "regressed" on the baseline's machine kind, NOTED on another; None otherwise. ``machine``: the
    result of same_machine; ``entries``: the key's (baseline, run) entries."""
    if key not in test.get("diff", {}):
        return None  # N = 0, or no seed timed by both runs
    rise = math.exp(test["diff"][key]) - 1.0
    if rise < min_rise:
        return None
    if key_holm is None and shift_holm is None:
        significant, why = _intervals_apart(*entries, test["seeds"]), "one seed: per-case 95% intervals apart"
    else:
        significant = any(p is not None and p < alpha / 2 for p in (key_holm, shift_holm))
        why = "; ".join(f"{name} p(Holm)={p:.2g}" for name, p in (("key", key_holm), ("model shift", shift_holm))
                        if p is not None)
    if not significant:
        return None
    seeds = len(test["seeds"])
    message = (f"latency ratio {math.exp(test['new'][key]):.2f} vs baseline {math.exp(test['old'][key]):.2f} "
               f"(geometric mean over {seeds} seed{'s' if seeds != 1 else ''}, {rise:+.0%}; {why}; "
               f"minimum rise {min_rise:.0%})")
    same, where = machine
    if same:
        return "regressed", message
    return NOTED, f"{message}; run on {where}, not the baseline's machine kind: reported, not failed"
