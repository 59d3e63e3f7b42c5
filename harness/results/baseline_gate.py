"""The regression gate: a run against a saved baseline, seed-level and calibrated on measured noise. Pure.

The rule (README): a key (a case without its seed) regresses when the mean of its per-seed drops,
over the seeds both runs measured, exceeds the baseline's by at least the model's minimum effect,
AND the increase is beyond the noise: either the key's own contrast against the other keys of its
(model, bit width), or the shift of that whole group, is significant in a one-sided t-test with
Holm's correction, each family at 2.5% (so at most 5% of no-change runs fail anywhere).

Why two tests: a seed moves every drop of a model alike (the float control is shared by every N
of a seed), so drops of one seed are correlated across keys. The per-key contrast removes that
shared shift and is judged against the per-case noise (key-by-seed residuals of both runs); a
regression of the whole group is judged against the variance of the seed means. Testing each
key's mean against the pooled within-key SD instead ignores the correlation and, in simulation,
fails more no-change runs than the nominal rate.

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
from typing import Callable, Iterable, Optional

import numpy as np
from scipy import stats

from harness.results.baseline import (MEASURED, Baseline, BaselineEntry, baseline_key, complete_table, entries_from_records,
                       noise_group, two_way)
from harness.results import latency_gate
from harness.results.seedstats import holm

FAMILY_ALPHA = 0.05  # family-wise false-regression rate of one whole run
FAILING = ("regressed", "missing")  # stale fails too, under strict mode


@dataclass(frozen=True)
class KeyVerdict:
    key: str
    status: str  # ok, regressed, stale, missing, new, not selected
    message: str  # one line
    seeds: tuple = ()  # seeds compared
    mean_drop_pp: Optional[float] = None
    baseline_mean_drop_pp: Optional[float] = None
    noise_sd_pp: Optional[float] = None  # per-case SD (key-by-seed residual) of the group
    key_p_holm: Optional[float] = None  # the key's contrast, one-sided, Holm-adjusted
    shift_p_holm: Optional[float] = None  # its model+width group's shift, one-sided, Holm-adjusted

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


def _group_tests(group: list, base: Baseline, run: dict) -> dict:
    """Tests of one (model, bits) group over the seeds both runs measured for all its keys.

    D[key, seed] = run drop - baseline drop. A seed shifts every drop of its model alike (the
    float control is shared by every N of a seed), so D is split into a shift common to the group
    and per-key contrasts. Contrasts: t-test on D[key] - mean(D), with the per-case variance from
    both runs' key-by-seed residuals. Shift: t-test on mean(D), with the variance of seed means
    in both runs (shift + per-case noise / keys). Residuals are orthogonal to the means they
    test, so the estimates are independent of the statistics."""
    usable = [k for k in group if base.entries[k].n != 0]
    seeds = tuple(sorted(set.intersection(*[{s for s, v in base.entries[k].seeds.items() if v.drop_pp is not None}
                                            & {s for s, v in run[k].seeds.items() if v.drop_pp is not None}
                                            for k in usable]))) if usable else ()
    if not seeds:
        return {}
    old = np.array([[base.entries[k].seeds[s].drop_pp for s in seeds] for k in usable], float)
    new = np.array([[run[k].seeds[s].drop_pp for s in seeds] for k in usable], float)
    diff = new - old
    keys, count = diff.shape
    ss_b, df_b, col_b, cdf_b = two_way(old)
    ss_r, df_r, col_r, cdf_r = two_way(new)
    out = {"seeds": seeds, "keys": usable, "diff": dict(zip(usable, diff.mean(axis=1))),
           "old": dict(zip(usable, old.mean(axis=1))), "new": dict(zip(usable, new.mean(axis=1)))}
    if cdf_b + cdf_r > 0:
        seed_var = (col_b + col_r) / (cdf_b + cdf_r)  # variance of one seed's mean over the keys
        se = math.sqrt(2.0 * seed_var / count)
        out["shift_p"] = _one_sided(diff.mean(), se, cdf_b + cdf_r)
        out["shift_sd"] = math.sqrt(seed_var)
    if keys > 1 and df_b + df_r > 0:
        case_var = (ss_b + ss_r) / (df_b + df_r)
        se = math.sqrt(2.0 * case_var * (1 - 1 / keys) / count)
        contrasts = diff.mean(axis=1) - diff.mean()
        out["key_p"] = {k: _one_sided(c, se, df_b + df_r) for k, c in zip(usable, contrasts)}
        out["case_sd"] = math.sqrt(case_var)
    return out


def _one_sided(effect: float, se: float, df: int) -> float:
    if se > 0:
        return float(stats.t.sf(effect / se, df))
    return 0.0 if effect > 0 else 1.0


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
    """One KeyVerdict per key of the baseline or the run, in key order."""
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
            comparable[noise_group(base.model, base.weight_bits)].append(key)
    tests = {group: _group_tests(keys, baseline, run_entries) for group, keys in comparable.items()}
    key_holm, shift_holm = _adjusted(tests)
    for group, keys in comparable.items():
        for key in keys:
            verdicts[key] = _judge(key, tests[group], key_holm.get((group, key)), shift_holm.get(group), ctx,
                                   baseline.entries[key].model)
    _gate_latency(verdicts, comparable, baseline, run_entries, records, ctx)
    return tuple(verdicts[key] for key in sorted(verdicts))


def _adjusted(tests: dict) -> tuple:
    """Two families, alpha/2 each: per-key contrasts and per-group shifts (Bonferroni between them).
    ({(group, key): Holm p}, {group: Holm p})."""
    key_p = {(g, k): p for g, t in tests.items() for k, p in t.get("key_p", {}).items()}
    shift_p = {g: t["shift_p"] for g, t in tests.items() if "shift_p" in t}
    key_holm = dict(zip(key_p, holm(list(key_p.values())))) if key_p else {}
    shift_holm = dict(zip(shift_p, holm(list(shift_p.values())))) if shift_p else {}
    return key_holm, shift_holm


def _gate_latency(verdicts: dict, comparable: dict, baseline: Baseline, run_entries: dict, records: list,
                  ctx: GateContext) -> None:
    """The latency gate (harness/results/latency_gate.py): the same tests on log latency ratios; a
    rise is added to the key's verdict (regressed on the baseline's machine kind, noted elsewhere)."""
    base_view = dataclasses.replace(baseline, entries=latency_gate.view(baseline.entries))
    run_view = latency_gate.view(run_entries)
    tests = {group: _group_tests(keys, base_view, run_view) for group, keys in comparable.items()}
    key_holm, shift_holm = _adjusted(tests)
    machine = latency_gate.same_machine(baseline.machine, records)
    for group, keys in comparable.items():
        for key in keys:
            found = latency_gate.judge(key, tests[group], key_holm.get((group, key)), shift_holm.get(group),
                                       ctx.alpha, ctx.latency_min_rise, machine,
                                       (baseline.entries[key], run_entries[key]))
            if found:
                status, message = found
                old = verdicts[key]
                verdicts[key] = dataclasses.replace(old, status=status if old.status == "ok" else old.status,
                                                    message=f"{old.message}; {message}")


def _judge(key: str, test: dict, key_holm: Optional[float], shift_holm: Optional[float], ctx: GateContext,
           model) -> KeyVerdict:
    if key not in test.get("diff", {}):
        why = "N = 0 is the float control itself" if test and key not in test["keys"] else "no seed measured by both runs"
        return KeyVerdict(key, "ok", f"{key}: {why}; gated on measurement and size only")
    diff, seeds = float(test["diff"][key]), test["seeds"]
    min_effect = ctx.min_effect_pp(model)
    half = ctx.alpha / 2
    tested = [p for p in (key_holm, shift_holm) if p is not None]
    if tested:
        significant = (key_holm is not None and key_holm < half) or (shift_holm is not None and shift_holm < half)
        parts = [f"key p(Holm)={key_holm:.2g}" if key_holm is not None else "one key: no contrast",
                 f"model+width shift {np.mean(list(test['diff'].values())):+.2f} pp p(Holm)={shift_holm:.2g}"
                 if shift_holm is not None else "no shift test"]
    else:  # no replication in either run: the minimum effect alone judges, and the verdict says so
        significant, parts = True, ["no noise estimate (one seed)"]
    status = "regressed" if significant and diff >= min_effect else "ok"
    message = (f"{key}: mean drop {test['new'][key]:.2f} pp vs baseline {test['old'][key]:.2f} over "
               f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({diff:+.2f} pp; {'; '.join(parts)}; "
               f"minimum effect {min_effect:g} pp)")
    return KeyVerdict(key, status, message, seeds=seeds, mean_drop_pp=float(test["new"][key]),
                      baseline_mean_drop_pp=float(test["old"][key]), noise_sd_pp=test.get("case_sd"),
                      key_p_holm=key_holm, shift_p_holm=shift_holm)


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



@dataclass(frozen=True)
class Detectable:
    """The smallest increase of the mean drop that the gate catches with 80% power, when a rerun has
    the baseline's noise and replication: one key worse (its contrast test) or every key of the
    (model, bits) group worse (the shift test). Holm's strictest level is assumed (the first test
    to be judged), so these are upper bounds; the minimum effect applies on top."""

    group: str
    keys: int
    seeds: int
    key_pp: Optional[float]
    group_pp: Optional[float]


def detectable_effects(baseline: Baseline, power: float = 0.80, alpha: float = FAMILY_ALPHA) -> tuple:
    groups = defaultdict(list)
    for entry in baseline.entries.values():
        groups[noise_group(entry.model, entry.weight_bits)].append(entry)
    tables = {name: complete_table(entries) for name, entries in sorted(groups.items())}
    key_tests = sum(len(keys) for keys, seeds, _ in tables.values() if len(keys) > 1 and len(seeds) > 1)
    shift_tests = sum(1 for keys, seeds, _ in tables.values() if keys and len(seeds) > 1)
    out = []
    for name, (keys, seeds, table) in tables.items():
        if not keys or len(seeds) < 2:
            out.append(Detectable(name, len(keys), len(seeds), None, None))
            continue
        residual, df, seed_means, seed_df = two_way(table)
        case_var = residual / df if df else None
        out.append(Detectable(name, len(keys), len(seeds),
                              *detectable_for(case_var, seed_means / seed_df, len(keys), len(seeds),
                                              key_tests, shift_tests, power, alpha)))
    return tuple(out)


def detectable_for(case_var: Optional[float], seed_mean_var: float, keys: int, seeds: int, key_tests: int,
                   shift_tests: int, power: float = 0.80, alpha: float = FAMILY_ALPHA) -> tuple:
    """(one key, whole group) detectable increases for a group of ``keys`` x ``seeds`` whose per-case
    variance is ``case_var`` and whose seed means vary by ``seed_mean_var`` (pp²), with the families'
    sizes; a rerun estimates both with the same degrees of freedom again."""
    key_pp = None
    if keys > 1 and case_var is not None:
        df = (keys - 1) * (seeds - 1)
        se = math.sqrt(2.0 * case_var * (1 - 1 / keys) / seeds)
        key_pp = _needed(se, 2 * df, alpha / 2 / max(key_tests, 1), power) / (1 - 1 / keys)
    se = math.sqrt(2.0 * seed_mean_var / seeds)
    return key_pp, _needed(se, 2 * (seeds - 1), alpha / 2 / max(shift_tests, 1), power)


def _needed(se: float, df: int, level: float, power: float) -> float:
    """The effect a one-sided t-test at ``level`` detects with ``power`` (normal-shift approximation)."""
    return float((stats.t.ppf(1 - level, df) + stats.t.ppf(power, df)) * se)
