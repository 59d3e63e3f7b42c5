"""The latency gate (harness/results/latency_gate.py, run by baseline_gate.gate): hand-made cases and
simulations with known truth. Pure: no TensorFlow, no timing."""

import math

import numpy as np
import pytest

from harness.results import baseline, baseline_gate, latency_gate

from test_baseline import record

HERE = {"cpu": {"model": "AMD EPYC", "flags": ["avx2", "avx512_vnni"]}}
ELSEWHERE = {"cpu": {"model": "Intel(R) Xeon(R) Processor", "flags": ["avx2", "avx512_vnni", "amx_int8"]}}
KEY = "m-last4-w8a8"


def timed(n, seed, ratio, machine=HERE, interval=0.02, model="m", bits=8):
    """A record with a fixed drop (the accuracy gate has nothing to say) and a latency ratio."""
    r = record(n=n, seed=seed, drop=0.2 * n, model=model, bits=bits)
    r.update(latency_ratio=ratio, latency_ratio_ci95=[ratio - interval, ratio + interval], env={"machine": machine})
    return r


def run_of(ratios: dict, **kw):
    return [timed(n, seed, ratio, **kw) for (n, seed), ratio in ratios.items()]


# log ratios of 3 keys x 3 seeds: a seed shift shared by the keys and some per-case noise
BASE = {(n, s): math.exp(math.log(1.0 + 0.1 * n) + seed + case) for n, case_row in
        {2: (0.01, -0.02, 0.0), 4: (-0.01, 0.02, 0.01), 6: (0.0, 0.01, -0.02)}.items()
        for s, (seed, case) in enumerate(zip((0.02, -0.03, 0.01), case_row))}


def saved(records, tmp_path, machine=HERE):
    baseline.save_baseline(records, tmp_path / "b.json", tier="smoke", machine=machine)
    return baseline.load_baseline(tmp_path / "b.json")


def gate(run, base):
    values = dict(min_effect_pp=lambda model: 1.0, size_growth_rel=lambda model: 0.01)
    return {v.key: v for v in baseline_gate.gate(run, base, baseline_gate.GateContext(**values))}


def test_the_baseline_keeps_each_seeds_ratio_and_interval(tmp_path):
    base = saved(run_of(BASE), tmp_path)
    value = base.entries[KEY].seeds[1]
    assert value.latency_ratio == pytest.approx(BASE[(4, 1)])
    assert value.latency_low == pytest.approx(BASE[(4, 1)] - 0.02) and value.latency_high > value.latency_ratio


def test_the_same_ratios_pass_without_a_latency_word(tmp_path):
    verdicts = gate(run_of(BASE), saved(run_of(BASE), tmp_path))
    assert {v.status for v in verdicts.values()} == {"ok"}
    assert not any("latency" in v.message for v in verdicts.values())


def slower(factor, key_n=4):
    return {k: r * factor if k[0] == key_n else r for k, r in BASE.items()}


def test_a_slower_key_regresses_on_the_baselines_machine_kind(tmp_path):
    verdicts = gate(run_of(slower(1.3)), saved(run_of(BASE), tmp_path))
    assert verdicts[KEY].status == "regressed" and "latency ratio" in verdicts[KEY].message
    assert "+30%" in verdicts[KEY].message
    assert {verdicts[k].status for k in verdicts if k != KEY} == {"ok"}
    assert baseline_gate.failures(verdicts.values(), strict=False)


def test_on_another_machine_kind_the_same_rise_is_noted_not_failed(tmp_path):
    base = saved(run_of(BASE), tmp_path)
    verdicts = gate(run_of(slower(1.3), machine=ELSEWHERE), base)
    assert verdicts[KEY].status == latency_gate.NOTED and "not the baseline's machine kind" in verdicts[KEY].message
    assert "Xeon" in verdicts[KEY].message
    assert not baseline_gate.failures(verdicts.values(), strict=True)
    unknown = saved(run_of(BASE), tmp_path, machine={})  # a baseline that does not say its CPU
    assert gate(run_of(slower(1.3)), unknown)[KEY].status == latency_gate.NOTED


def test_a_rise_below_the_minimum_is_not_a_regression_even_when_significant(tmp_path):
    verdicts = gate(run_of(slower(1.08)), saved(run_of(BASE), tmp_path))
    assert verdicts[KEY].status == "ok"


def test_an_accuracy_regression_keeps_its_status_and_gains_the_latency_line(tmp_path):
    run = run_of(slower(1.3))
    for r in run:
        if r["n"] == 4:
            r["accuracy_drop_pp"] += 5.0
    verdict = gate(run, saved(run_of(BASE), tmp_path))[KEY]
    assert verdict.status == "regressed" and "mean drop" in verdict.message and "latency ratio" in verdict.message


def test_runs_or_baselines_without_latency_are_not_latency_gated(tmp_path):
    untimed = [dict(r, latency_ratio=None, latency_ratio_ci95=None) for r in run_of(BASE)]
    assert {v.status for v in gate(run_of(slower(2.0)), saved(untimed, tmp_path)).values()} == {"ok"}
    assert {v.status for v in gate(untimed, saved(run_of(BASE), tmp_path)).values()} == {"ok"}


def test_one_seed_needs_the_per_case_intervals_apart(tmp_path):
    one = {k: r for k, r in BASE.items() if k[1] == 0}
    base = saved(run_of(one, interval=0.02), tmp_path)
    apart = {k: r * 1.3 if k[0] == 4 else r for k, r in one.items()}
    assert gate(run_of(apart, interval=0.02), base)[KEY].status == "regressed"
    assert gate(run_of(apart, interval=0.5), base)[KEY].status == "ok"  # overlapping: could be noise


# -- simulations with known ground truth ----------------------------------------------------------

def simulate(rng, groups, seeds=(0, 1, 2), seed_sd=0.03, case_sd=0.04, rise=None, machine=HERE):
    """One run: log ratio = the key's truth + a per-(group, seed) shift + per-case noise; ``rise``:
    {(model, n): factor} of the truth. N = 0 keys time the control against itself."""
    rise = rise or {}
    out = []
    for model, bits, keys in groups:
        shift = rng.normal(0, seed_sd, len(seeds))
        for n in range(keys + 1):
            for i, seed in enumerate(seeds):
                log_ratio = (0.0 if n == 0 else math.log(0.9 + 0.1 * n) + shift[i]) + rng.normal(0, case_sd)
                ratio = math.exp(log_ratio) * rise.get((model, n), 1.0)
                out.append(timed(n, seed, ratio, machine, model=model, bits=bits))
    return out


def share(runs, groups, rise=None, target=None, machine=HERE):
    """Share of simulated runs failing anywhere (target None) or with ``target`` regressed."""
    rng = np.random.default_rng(2024)
    hits = 0
    for _ in range(runs):
        entries = baseline.entries_from_records(simulate(rng, groups))
        base = baseline.Baseline("sim", "now", entries, baseline.pooled_noise(entries.values()), machine=HERE)
        verdicts = gate(simulate(rng, groups, rise=rise, machine=machine), base)
        hits += bool(baseline_gate.failures(verdicts.values(), strict=True)) if target is None \
            else verdicts[target].status == "regressed"
    return hits / runs


GROUPS = [(m, b, 5) for m in "abc" for b in (8, 4)]


@pytest.mark.slow
def test_false_regressions_per_run_at_most_5_percent_under_no_change():
    """No change at all, a seed shift about as large as the per-case noise: at most 5% of runs fail."""
    rate = share(300, GROUPS)
    assert rate <= 0.05, rate


@pytest.mark.slow
def test_a_30_percent_slower_key_is_caught_in_most_runs_and_never_fails_elsewhere():
    caught = share(150, GROUPS, rise={("a", 3): 1.3}, target="a-last3-w8a8")
    assert caught >= 0.80, caught
    assert share(60, GROUPS, rise={("a", 3): 1.3}, machine=ELSEWHERE) == 0.0
