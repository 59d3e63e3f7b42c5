"""The regression gate: a run against a saved baseline, seed-level, each configuration against its own noise. Pure.

The rule (docs/results.md, "The regression gate"; the statistics in harness/results/gate_stats.py):

- a **configuration** (a key: a case without its seed) regresses when its rise relative to its peers
  (the other configurations of its group, else of its model: the shift a seed gives them alike removed) is at least the
  model's minimum effect and significant against the configuration's own seed-to-seed noise (with a
  prior from its model x width x method group), one-sided t, Holm over every configuration of the run
  at 2.5%;
- a **shift shared by a whole model** (its configurations' mean rise) is reported on its own line
  ("MODEL (shared shift)"): on the baseline's machine it regresses when at least the minimum effect and
  significant against the seed noise of the model's mean drop; on another machine (CPU kind or library
  versions, harness/results/machines.py) it is tested against the model's measured cross-machine spread
  instead: within it, or with no spread measured, it is noted with its size; beyond it, it regresses.
  Holm over the models at 2.5%: at most 5% of no-change runs fail anywhere.
- when the machines differ, one "(machine)" line names both.

Besides: a .tflite that grew by more than the spec's tolerance regresses (bytes are exact); a
case the baseline measured and this run did not (error, nan, timeout) regresses; a baseline case
that this run should have measured but has no record of is missing; a case whose config hash
changed is stale (listed; a failure under strict mode, which CI uses).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional

import numpy as np
from scipy import stats

from harness.results.baseline import MEASURED, Baseline, BaselineEntry, baseline_key, entries_from_records
from harness.results import gate_stats, latency_gate, machines
from harness.results.seedstats import holm

FAMILY_ALPHA = 0.05  # family-wise false-regression rate of one whole run
FAILING = ("regressed", "missing")  # stale fails too, under strict mode
NOTED = latency_gate.NOTED  # reported, never failing
SHIFT_SUFFIX = " (shared shift)"  # the key of a model's shift verdict: "mlp (shared shift)"
MACHINE_KEY = "(machine)"


@dataclass(frozen=True)
class KeyVerdict:
    key: str
    status: str  # ok, regressed, stale, missing, new, not selected
    message: str  # one line
    seeds: tuple = ()  # seeds compared
    mean_drop_pp: Optional[float] = None
    baseline_mean_drop_pp: Optional[float] = None
    noise_sd_pp: Optional[float] = None  # SD of one seed's contrast (the configuration's own, with its prior)
    key_p_holm: Optional[float] = None  # the key's contrast, one-sided, Holm-adjusted
    shift_p_holm: Optional[float] = None  # its model's shared shift, one-sided, Holm-adjusted

    def fails(self, strict: bool) -> bool:
        return self.status in FAILING or (strict and self.status == "stale")


@dataclass(frozen=True)
class GateContext:
    """What the gate needs to know about the run besides its records."""

    min_effect_pp: Callable[[str], float]  # model -> minimum drop increase that counts
    size_growth_rel: Callable[[str], float]  # model -> allowed relative .tflite growth
    expected: Optional[frozenset] = None  # case ids this session collected (None: unknown)
    narrowed: bool = False  # options, -k, -m or node ids left part of the tier's grid out
    alpha: float = FAMILY_ALPHA
    latency_min_rise: float = latency_gate.MIN_RISE  # relative rise of the latency ratio that counts


def context_for(thresholds_of: Callable, drop_tolerance: Optional[float] = None, **run) -> GateContext:
    """The gate's context from each model's thresholds (``thresholds_of(model)``); ``drop_tolerance``
    (--qat-drop-tolerance) replaces every model's min_regression_pp. ``run``: expected, narrowed."""
    def min_effect(model):
        return drop_tolerance if drop_tolerance is not None else thresholds_of(model).min_regression_pp

    return GateContext(min_effect_pp=min_effect,
                       size_growth_rel=lambda model: thresholds_of(model).baseline_size_growth_rel, **run)


def _table(keys: list, base: dict, run: dict) -> tuple:
    """(keys that are not the float control, seeds both runs measured for all of them, baseline table, run table)."""
    usable = [k for k in keys if not gate_stats.is_control(k, base[k].n)]
    measured = [{s for s, v in base[k].seeds.items() if v.drop_pp is not None}
                & {s for s, v in run[k].seeds.items() if v.drop_pp is not None} for k in usable]
    seeds = tuple(sorted(set.intersection(*measured))) if usable else ()
    old = np.array([[base[k].seeds[s].drop_pp for s in seeds] for k in usable], float)
    new = np.array([[run[k].seeds[s].drop_pp for s in seeds] for k in usable], float)
    return usable, seeds, old, new


def model_tests(keys: list, base: dict, run: dict) -> Optional[gate_stats.ModelTests]:
    """One model's tests (harness/results/gate_stats.py) over its comparable keys; None without a common seed."""
    usable, seeds, old, new = _table(keys, base, run)
    if not seeds:
        return None
    groups = [gate_stats.prior_group(base[k].model, base[k].weight_bits, k) for k in usable]
    return gate_stats.model_tests(old, new, usable, groups, seeds)


def _grown(base: BaselineEntry, run: BaselineEntry, tolerance: float) -> list:
    grown = []
    for seed, value in run.seeds.items():
        old = base.seeds.get(seed)
        if old and old.tflite_bytes and value.tflite_bytes is not None:
            growth = (value.tflite_bytes - old.tflite_bytes) / old.tflite_bytes
            if growth > tolerance:
                grown.append(f"{value.case_id} .tflite {value.tflite_bytes:,.0f} B grew {growth:+.1%} > {tolerance:.1%}")
    return grown


def _absent(base: BaselineEntry, present: set, ctx: GateContext) -> tuple:
    """(missing, not selected) case ids of a baseline entry that this run has no record of."""
    missing, skipped = [], []
    for case_id in sorted(base.by_case_id()):
        if case_id in present:
            continue
        if ctx.expected is not None and case_id in ctx.expected:
            missing.append(case_id)  # collected, yet no record
        elif ctx.narrowed:
            skipped.append(case_id)
        else:
            missing.append(case_id)  # the tier's grid no longer has it
    return missing, skipped


def _verdict_without_test(key, base, run, run_records, ctx) -> Optional[KeyVerdict]:
    """The verdicts that need no statistics: new, stale, unmeasured, missing, grown."""
    if base is None:
        return KeyVerdict(key, "new", f"{key}: not in the baseline")
    by_id = base.by_case_id()
    stale = [r["case_id"] for r in run_records if r["case_id"] in by_id
             and by_id[r["case_id"]].config_hash != r.get("config_hash")]
    if stale:
        return KeyVerdict(key, "stale", f"{key}: config changed for {', '.join(stale)}; not compared")
    unmeasured = [f"{r['case_id']} ({r.get('status')})" for r in run_records
                  if r["case_id"] in by_id and r.get("status") not in MEASURED]
    missing, skipped = _absent(base, {r["case_id"] for r in run_records}, ctx)
    if unmeasured or missing:
        what = [f"no measurement: {', '.join(unmeasured)}"] if unmeasured else []
        what += [f"missing: {', '.join(missing)}"] if missing else []
        return KeyVerdict(key, "regressed" if unmeasured else "missing", f"{key}: " + "; ".join(what))
    grown = _grown(base, run, ctx.size_growth_rel(base.model)) if run else []
    if grown:
        return KeyVerdict(key, "regressed", f"{key}: " + "; ".join(grown))
    if run is None:
        return KeyVerdict(key, "not selected", f"{key}: not selected in this run ({', '.join(skipped)})")
    return None


def gate(records: Iterable[dict], baseline: Baseline, ctx: GateContext) -> tuple:
    """One KeyVerdict per key of the baseline or the run, one per model whose shared shift is not plainly
    ok, and one naming both machines when they differ; in key order."""
    records = [r for r in records if r.get("case_id")]
    run_entries = entries_from_records(records)
    by_key = defaultdict(list)
    for record in records:
        by_key[baseline_key(record)].append(record)
    verdicts, comparable = {}, defaultdict(list)
    for key in sorted(set(baseline.entries) | set(by_key)):
        base, run = baseline.entries.get(key), run_entries.get(key)
        verdict = _verdict_without_test(key, base, run, by_key.get(key, []), ctx)
        if verdict is not None:
            verdicts[key] = verdict
        else:
            comparable[str(base.model)].append(key)
    same, line = machines.compare(baseline.machine, baseline.versions, records)
    verdicts.update(judge(baseline.entries, run_entries, comparable, ctx, same, baseline.machine_spread))
    if line:
        verdicts[MACHINE_KEY] = KeyVerdict(MACHINE_KEY, NOTED, line)
    _gate_latency(verdicts, comparable, baseline, run_entries, records, ctx)
    return tuple(verdicts[key] for key in sorted(verdicts))


def judge(base: dict, run: dict, comparable: dict, ctx: GateContext, same_machine: bool,
          spread: Mapping) -> dict:
    """{key: KeyVerdict} of the comparable keys ({model: [keys]}) and of the models' shared shifts.
    ``spread``: {model: {"spread_pp": ...}}, the allowance for a shift on another machine."""
    tests = {model: model_tests(keys, base, run) for model, keys in comparable.items()}
    allowance = {m: 0.0 if same_machine else (spread.get(m) or {}).get("spread_pp") for m in tests}
    key_holm, shift_holm = _adjusted(tests, allowance)
    out = {}
    for model, keys in comparable.items():
        test = tests[model]
        for key in keys:
            if gate_stats.is_control(key, base[key].n):
                out[key] = KeyVerdict(key, "ok", f"{key}: N = 0 is the float control itself; gated on measurement "
                                      "and size only")
                continue
            out[key] = _judge_key(key, test, key_holm.get(key), shift_holm.get(model), ctx.min_effect_pp(model),
                                  ctx.alpha)
        shift = _judge_shift(model, test, shift_holm.get(model), allowance[model], same_machine, ctx)
        if shift is not None:
            out[shift.key] = shift
    return out


def _adjusted(tests: dict, allowance: Optional[dict] = None) -> tuple:
    """Two families, alpha/2 each: every configuration's contrast, and every model's shift tested against
    its allowance (models on another machine without a measured spread are not tested).
    ({key: Holm p}, {model: Holm p})."""
    allowance = allowance or {}
    key_p = {k: p for t in tests.values() if t for k, p in t.key_p.items()}
    shift_p = {m: t.shift_p(allowance.get(m, 0.0)) for m, t in tests.items()
               if t and t.shift_se is not None and (m not in allowance or allowance[m] is not None)}
    key_holm = dict(zip(key_p, holm(list(key_p.values())))) if key_p else {}
    shift_holm = dict(zip(shift_p, holm(list(shift_p.values())))) if shift_p else {}
    return key_holm, shift_holm


def _gate_latency(verdicts: dict, comparable: dict, baseline: Baseline, run_entries: dict, records: list,
                  ctx: GateContext) -> None:
    """The latency gate (harness/results/latency_gate.py): the same tests on log latency ratios; a
    rise is added to the key's verdict (regressed on the baseline's machine kind, noted elsewhere)."""
    base_view, run_view = latency_gate.view(baseline.entries), latency_gate.view(run_entries)
    tests = {model: model_tests(keys, base_view, run_view) for model, keys in comparable.items()}
    key_holm, shift_holm = _adjusted(tests)
    machine = latency_gate.same_machine(baseline.machine, records)
    for model, keys in comparable.items():
        test = vars(tests[model]) if tests[model] else {}
        for key in keys:
            found = latency_gate.judge(key, test, key_holm.get(key), shift_holm.get(model), ctx.alpha,
                                       ctx.latency_min_rise, machine, (baseline.entries[key], run_entries[key]))
            if found:
                status, message = found
                old = verdicts[key]
                verdicts[key] = dataclasses.replace(old, status=status if old.status == "ok" else old.status,
                                                    message=f"{old.message}; {message}")


def _p(p: Optional[float]) -> str:
    return "no noise estimate (one seed)" if p is None else f"p(Holm)={p:.2g}"


def _judge_key(key: str, test, key_holm: Optional[float], shift_holm: Optional[float], min_effect: float,
               alpha: float) -> KeyVerdict:
    if test is None or key not in test.diff:
        return KeyVerdict(key, "ok", f"{key}: no seed measured by both runs; gated on measurement and size only")
    diff, seeds = float(test.diff[key]), test.seeds
    shared = f"model shift {test.shift:+.2f} pp"
    if key in test.contrast:
        contrast, sd = float(test.contrast[key]), test.contrast_sd.get(key)
        # one seed: no noise estimate, the minimum effect alone judges, and the verdict says so
        significant = key_holm is None or key_holm < alpha / 2
        status = "regressed" if significant and contrast >= min_effect else "ok"
        noise = f", own noise SD {sd:.2f} pp (df {test.contrast_df[key]})" if sd is not None else ""
        parts = f"vs its peers {contrast:+.2f} pp{noise}, {_p(key_holm)}; {shared}"
    else:
        status, parts = "ok", f"the model's only configuration: judged by its {shared}"
    message = (f"{key}: mean drop {test.new[key]:.2f} pp vs baseline {test.old[key]:.2f} over {len(seeds)} "
               f"seed{'s' if len(seeds) != 1 else ''} ({diff:+.2f} pp; {parts}; minimum effect {min_effect:g} pp)")
    return KeyVerdict(key, status, message, seeds=seeds, mean_drop_pp=float(test.new[key]),
                      baseline_mean_drop_pp=float(test.old[key]), noise_sd_pp=test.contrast_sd.get(key),
                      key_p_holm=key_holm, shift_p_holm=shift_holm)


def _judge_shift(model: str, test, shift_holm: Optional[float], allowance: Optional[float], same_machine: bool,
                 ctx: GateContext) -> Optional[KeyVerdict]:
    """The model's shared shift: regressed, noted (another machine) or None (ok on the baseline's machine)."""
    if test is None or not test.keys:
        return None
    min_effect, key = ctx.min_effect_pp(model), model + SHIFT_SUFFIX
    noise = f", seed SD {test.seed_sd:.2f} pp" if test.seed_sd is not None else ""
    size = (f"{model}: shift shared by its {len(test.keys)} configuration{'s' if len(test.keys) != 1 else ''} {test.shift:+.2f} pp over "
            f"{len(test.seeds)} seed{'s' if len(test.seeds) != 1 else ''}{noise}")
    if allowance is None:  # another machine, no spread measured for this model
        return KeyVerdict(key, NOTED, f"{size}; no cross-machine spread measured for {model}: another machine's "
                          f"shift is reported, not failed")
    tested = test.shift_se is None or shift_holm < ctx.alpha / 2
    where = "on the baseline's machine" if same_machine else f"beyond the cross-machine spread {allowance:.2f} pp"
    if tested and test.shift >= min_effect and test.shift > allowance:
        return KeyVerdict(key, "regressed", f"{size}; {where}: {_p(shift_holm)}; minimum effect {min_effect:g} pp",
                          shift_p_holm=shift_holm)
    if same_machine:
        return None
    return KeyVerdict(key, NOTED, f"{size}; another machine, within its cross-machine spread {allowance:.2f} pp "
                      f"or not beyond it significantly ({_p(shift_holm)}): reported, not failed",
                      shift_p_holm=shift_holm)


def failures(verdicts: Iterable[KeyVerdict], strict: bool) -> list:
    """One line per failing verdict."""
    return [f"baseline {v.status}: {v.message}" for v in verdicts if v.fails(strict)]


def counts(verdicts: Iterable[KeyVerdict]) -> dict:
    out = defaultdict(int)
    for verdict in verdicts:
        out[verdict.status] += 1
    return dict(out)


def record_verdicts(records: Iterable[dict], verdicts: Iterable[KeyVerdict]) -> None:
    """Attach each key's verdict to its records (for the report and the terminal summary)."""
    by_key = {v.key: v for v in verdicts}
    for record in records:
        verdict = by_key.get(baseline_key(record))
        if verdict is not None:
            record["baseline"] = {"status": verdict.status, "message": verdict.message}
