"""harness.results.baseline_gate: the seed-level regression gate, on hand-made cases and on simulations with known truth
(Gaussian here; resampling real seeds in tests/test_gate_power.py)."""

from pathlib import Path

import numpy as np
import pytest

import json

from harness.results import baseline, baseline_gate, machines

from test_baseline import record

SMOKE_BASELINE = Path(__file__).resolve().parents[1] / "results" / "baselines" / "smoke.json"


def context(**overrides):
    values = dict(min_effect_pp=lambda model: 1.0, size_growth_rel=lambda model: 0.01)
    values.update(overrides)
    return baseline_gate.GateContext(**values)


HERE = {"cpu": {"model": "AMD EPYC", "flags": ["avx2", "avx512_vnni"]}, "python": "3.11.7"}
ELSEWHERE = {"cpu": {"model": "Intel(R) Xeon(R) Processor", "flags": ["avx2", "avx512_vnni", "amx_int8"]},
             "python": "3.11.7"}


def saved_from(records, tmp_path, name="b.json", machine=HERE):
    baseline.save_baseline(records, tmp_path / name, tier="smoke", machine=machine)
    return baseline.load_baseline(tmp_path / name)


def grid(drops: dict, machine=HERE, **kw):
    """Records from {(n, seed): drop}, measured on ``machine``."""
    return [dict(record(n=n, seed=seed, drop=drop, **kw), env={"machine": machine, "versions": {"tensorflow": "2.21.0"}})
            for (n, seed), drop in drops.items()]


BASE = {(n, s): d for n, ds in {2: (0.2, 0.5, -0.1), 4: (0.6, 0.9, 0.3), 6: (1.0, 1.4, 0.8)}.items()
        for s, d in enumerate(ds)}


def verdict_of(verdicts, key):
    return next(v for v in verdicts if v.key == key)


def test_same_numbers_pass(tmp_path):
    verdicts = baseline_gate.gate(grid(BASE), saved_from(grid(BASE), tmp_path), context())
    assert {v.status for v in verdicts} == {"ok"}
    assert not baseline_gate.failures(verdicts, strict=True)


def test_a_large_consistent_increase_regresses_and_a_small_one_does_not(tmp_path):
    saved = saved_from(grid(BASE), tmp_path)
    worse = {**BASE, **{(4, s): d + 3.0 for (n, s), d in BASE.items() if n == 4}}
    verdicts = baseline_gate.gate(grid(worse), saved, context())
    assert verdict_of(verdicts, "m-last4-w8a8").status == "regressed"
    assert "Holm" in verdict_of(verdicts, "m-last4-w8a8").message
    slightly = {**BASE, **{(4, s): d + 0.5 for (n, s), d in BASE.items() if n == 4}}
    assert verdict_of(baseline_gate.gate(grid(slightly), saved, context()), "m-last4-w8a8").status == "ok"


def test_an_increase_below_the_minimum_effect_is_not_a_regression(tmp_path):
    tight = {key: d + 0.01 * key[1] for key, d in BASE.items()}  # nearly noiseless
    saved = saved_from(grid(tight), tmp_path)
    worse = {**tight, **{(4, s): tight[(4, s)] + 0.8 for s in range(3)}}
    verdicts = baseline_gate.gate(grid(worse), saved, context())
    assert verdict_of(verdicts, "m-last4-w8a8").status == "ok"  # significant, but < 1.0 pp
    verdicts = baseline_gate.gate(grid(worse), saved, context(min_effect_pp=lambda m: 0.5))
    assert verdict_of(verdicts, "m-last4-w8a8").status == "regressed"


def test_stale_missing_new_unmeasured_and_grown(tmp_path):
    saved = saved_from(grid(BASE), tmp_path)
    run = grid({k: d for k, d in BASE.items() if k != (6, 2)})  # one case absent
    run[0]["config_hash"] = "edited"  # m-last2-w8a8: builder edited
    run.append(record(n=8, drop=0.1))  # not in the baseline
    run[3] = dict(run[3], status="nan", accuracy_drop_pp=None)  # m-last4-w8a8 diverged
    verdicts = baseline_gate.gate(run, saved, context())
    status = {v.key: v.status for v in verdicts}
    assert status == {"m-last2-w8a8": "stale", "m-last4-w8a8": "regressed", "m-last6-w8a8": "missing",
                      "m-last8-w8a8": "new"}
    assert "no measurement" in verdict_of(verdicts, "m-last4-w8a8").message
    assert len(baseline_gate.failures(verdicts, strict=False)) == 2 and len(baseline_gate.failures(verdicts, strict=True)) == 3
    grown = grid(BASE)
    grown[1]["tflite_bytes"] = 1020
    assert "grew" in verdict_of(baseline_gate.gate(grown, saved, context()), "m-last2-w8a8").message


def test_absent_cases_of_a_narrowed_run_are_not_selected(tmp_path):
    saved = saved_from(grid(BASE), tmp_path)
    only_n2 = grid({k: d for k, d in BASE.items() if k[0] == 2})
    narrowed = baseline_gate.gate(only_n2, saved, context(narrowed=True, expected=frozenset(r["case_id"] for r in only_n2)))
    assert verdict_of(narrowed, "m-last4-w8a8").status == "not selected"
    assert not baseline_gate.failures(narrowed, strict=True)
    # the same absence in a run of the whole grid means the grid lost cases: missing
    assert verdict_of(baseline_gate.gate(only_n2, saved, context()), "m-last4-w8a8").status == "missing"


def two_methods(qat_noise, ptq_noise, seeds=range(4)):
    """m W8: QAT N = 2, 4, 6 (quiet or not) and PTQ N = 2, 4, 6 (noisy or not); a fixed pattern per seed."""
    wobble = (0.0, 1.0, -1.0, 0.5)
    out = {}
    for n in (2, 4, 6):
        for s in seeds:
            out[("qat", n, s)] = 0.2 * n + qat_noise * wobble[(s + n) % 4]
            out[("ptq", n, s)] = 0.5 * n + ptq_noise * wobble[(s + n // 2) % 4]
    return out


def method_grid(drops, machine=HERE):
    return [dict(record(n=n, seed=s, drop=d), case_id=f"m-last{n}-w8a8{'-ptq' if m == 'ptq' else ''}"
                 + (f"-s{s}" if s else ""), method=m, env={"machine": machine}) for (m, n, s), d in drops.items()]


def test_each_configuration_is_judged_against_its_own_noise_not_a_pooled_one(tmp_path):
    """A quiet QAT group next to a noisy PTQ group: the QAT keys' noise stays the QAT group's (pooling
    with PTQ would hide a QAT regression), and a 1.5 pp rise of one QAT key regresses."""
    drops = two_methods(0.05, 1.5)
    saved = saved_from(method_grid(drops), tmp_path)
    worse = {**drops, **{("qat", 4, s): drops[("qat", 4, s)] + 1.5 for s in range(4)}}
    verdicts = {v.key: v for v in baseline_gate.gate(method_grid(worse), saved, context())}
    assert verdicts["m-last4-w8a8"].status == "regressed", verdicts["m-last4-w8a8"].message
    assert verdicts["m-last4-w8a8"].noise_sd_pp < 0.5 < verdicts["m-last4-w8a8-ptq"].noise_sd_pp
    noisy = {**drops, **{("ptq", 4, s): drops[("ptq", 4, s)] + 1.5 for s in range(4)}}
    verdicts = {v.key: v for v in baseline_gate.gate(method_grid(noisy), saved, context())}
    assert verdicts["m-last4-w8a8-ptq"].status == "ok"  # the same rise is within the PTQ keys' own noise


def shifted(by=3.0):
    return {k: d + by for k, d in BASE.items()}


def test_a_shift_of_the_whole_model_is_one_verdict_not_every_configuration(tmp_path):
    saved = saved_from(grid(BASE), tmp_path)
    verdicts = {v.key: v for v in baseline_gate.gate(grid(shifted()), saved, context())}
    shift = verdicts["m" + baseline_gate.SHIFT_SUFFIX]
    assert shift.status == "regressed" and "+3.00 pp" in shift.message and "baseline's machine" in shift.message
    assert {verdicts[f"m-last{n}-w8a8"].status for n in (2, 4, 6)} == {"ok"}
    assert baseline_gate.MACHINE_KEY not in verdicts


def test_on_another_machine_a_shift_is_judged_against_the_measured_spread(tmp_path):
    saved = saved_from(grid(BASE), tmp_path)
    elsewhere = grid(shifted(), machine=ELSEWHERE)
    verdicts = {v.key: v for v in baseline_gate.gate(elsewhere, saved, context())}
    line = verdicts[baseline_gate.MACHINE_KEY].message
    assert "AMD EPYC" in line and "Xeon" in line  # both machines named, in one line
    assert verdicts["m" + baseline_gate.SHIFT_SUFFIX].status == "noted"
    assert "no cross-machine spread measured for m" in verdicts["m" + baseline_gate.SHIFT_SUFFIX].message
    assert not baseline_gate.failures(verdicts.values(), strict=True)
    for spread, status in ((3.5, "noted"), (0.2, "regressed")):
        (tmp_path / "machine-spread.json").write_text(json.dumps(
            {"format": machines.SPREAD_FORMAT, "models": {"m": {"spread_pp": spread}}}))
        with_spread = baseline.load_baseline(tmp_path / "b.json")
        assert with_spread.machine_spread["m"]["spread_pp"] == spread
        verdict = verdict_of(baseline_gate.gate(elsewhere, with_spread, context()), "m" + baseline_gate.SHIFT_SUFFIX)
        assert verdict.status == status, verdict.message


def test_other_library_versions_are_another_machine_and_a_bad_spread_file_is_refused(tmp_path):
    saved = saved_from(grid(BASE), tmp_path)
    assert saved.versions == {"tensorflow": "2.21.0"}
    other = [dict(r, env={"machine": HERE, "versions": {"tensorflow": "2.22.0"}}) for r in grid(BASE)]
    line = verdict_of(baseline_gate.gate(other, saved, context()), baseline_gate.MACHINE_KEY).message
    assert "tensorflow 2.22.0" in line and "tensorflow 2.21.0" in line
    (tmp_path / "machine-spread.json").write_text(json.dumps({"format": machines.SPREAD_FORMAT, "models": {"m": {}}}))
    with pytest.raises(baseline.BaselineError, match="machine spread"):
        baseline.load_baseline(tmp_path / "b.json")


def test_the_spread_is_the_largest_model_shift_between_machines():
    base = baseline.entries_from_records(grid(BASE))
    moved = baseline.entries_from_records(grid(shifted(0.4)))
    spread = machines.spread([("a", base, HERE, {}), ("b", moved, ELSEWHERE, {}), ("c", moved, HERE, {})])
    assert spread["m"]["spread_pp"] == pytest.approx(0.4) and spread["m"]["pairs"] == 9
    assert machines.spread([("a", base, HERE, {}), ("c", moved, HERE, {})]) == {}  # one machine: no spread


def test_a_numerics_setting_like_onednn_off_is_another_machine_to_the_gate_and_the_spread():
    """TF_ENABLE_ONEDNN_OPTS=0 on the baseline's CPU moves rounding the way another CPU does: the gate names
    it, and spread() measures it (a same-CPU run with the same numerics gives no cross-machine pair)."""
    on = [dict(r, env={"machine": HERE, "versions": {"tensorflow": "2.21.0"}, "numerics": {"onednn_opts": "1"}})
          for r in grid(BASE)]
    off = [dict(r, env={"machine": HERE, "versions": {"tensorflow": "2.21.0"}, "numerics": {"onednn_opts": "0"}})
           for r in grid(shifted(0.3))]
    assert machines.versions_of(off) == {"tensorflow": "2.21.0", "numerics.onednn_opts": "0"}
    same, line = machines.compare(HERE, machines.versions_of(on), off)
    assert not same and "numerics.onednn_opts 0" in line and "numerics.onednn_opts 1" in line
    assert machines.compare(HERE, {"tensorflow": "2.21.0"}, off)[0]  # a baseline that never said: not compared
    sources = [(name, baseline.entries_from_records(recs), HERE, machines.versions_of(recs))
               for name, recs in (("on", on), ("off", off))]
    assert machines.spread(sources)["m"]["spread_pp"] == pytest.approx(0.3)


def test_an_earlier_spread_is_kept_and_the_larger_one_wins(tmp_path):
    """A spread measured once (whose runs may be gone) is not forgotten when a new pair is measured."""
    earlier = {"m": {"spread_pp": 0.2, "between": ["x", "y"]}, "other": {"spread_pp": 1.0}}
    base = baseline.entries_from_records(grid(BASE))
    moved = baseline.entries_from_records(grid(shifted(0.4)))
    got = machines.spread([("a", base, HERE, {}), ("b", moved, ELSEWHERE, {})], earlier)
    assert got["m"]["spread_pp"] == pytest.approx(0.4) and got["other"]["spread_pp"] == 1.0
    assert machines.spread([("a", base, HERE, {}), ("b", base, ELSEWHERE, {})], earlier)["m"]["spread_pp"] == 0.2
    path = tmp_path / "machine-spread.json"
    machines.save_spread(got, path, ["a", "b"])
    assert machines.read_spread_file(path) == (machines.load_spread(path), ["a", "b"])
    (tmp_path / "b.json").write_text(json.dumps({"format": "qatbench-baseline"}))
    assert machines.read_spread_file(tmp_path / "b.json") is None  # a baseline: read as one, not a spread


def test_the_spread_command_keeps_an_earlier_spread_file_and_names_every_source(tmp_path):
    import subprocess
    import sys

    saved_from(grid(BASE), tmp_path, "here.json", machine=HERE)
    saved_from(grid(shifted(0.4)), tmp_path, "there.json", machine=ELSEWHERE)
    earlier = tmp_path / "earlier.json"
    machines.save_spread({"gone": {"spread_pp": 0.25, "between": ["x", "y"]}}, earlier, ["runs/gone"])
    out = tmp_path / "machine-spread.json"
    done = subprocess.run([sys.executable, "-m", "harness", "spread", str(tmp_path / "here.json"),
                           str(tmp_path / "there.json"), str(earlier), "--save", str(out)],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    models, sources = machines.read_spread_file(out)
    assert models["m"]["spread_pp"] == pytest.approx(0.4) and models["gone"]["spread_pp"] == 0.25
    assert "runs/gone" in sources and str(tmp_path / "there.json") in sources
    (tmp_path / "bad.json").write_text(json.dumps({"format": machines.SPREAD_FORMAT, "models": {"m": {}}}))
    refused = subprocess.run([sys.executable, "-m", "harness", "spread", str(tmp_path / "bad.json"), "--save",
                              str(out)], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1 and "spread_pp" in refused.stderr


# -- simulations with known ground truth ----------------------------------------------------------

def simulate_records(rng, layout, shift=None):
    """Records of one run. ``layout``: [(model, bits, n_keys, seeds, seed_sd, case_sd)]. A drop is
    the key's true mean + a per-(model, bits, seed) shift shared by every N of that seed (the float
    control's noise) + per-case noise; N = 0 keys are 0 by construction. ``shift``: {(model, bits, n): pp}."""
    shift = shift or {}
    out = []
    for model, bits, n_keys, seeds, seed_sd, case_sd in layout:
        seed_effect = rng.normal(0, seed_sd, len(seeds))
        for n in range(n_keys + 1):
            for i, seed in enumerate(seeds):
                drop = 0.0 if n == 0 else 0.2 * n + seed_effect[i] + rng.normal(0, case_sd) + shift.get((model, bits, n), 0)
                out.append(record(n=n, seed=seed, drop=drop, model=model, bits=bits))
    return out


def gate_rate(runs, layout, shift=None, target=None):
    """Share of simulated runs with any failing verdict (target None) or with ``target`` regressed."""
    rng = np.random.default_rng(12345)
    hits = 0
    for _ in range(runs):
        saved_records = simulate_records(rng, layout)
        entries = baseline.entries_from_records(saved_records)
        saved = baseline.Baseline("sim", "now", entries, baseline.pooled_noise(entries.values()))
        verdicts = baseline_gate.gate(simulate_records(rng, layout, shift), saved, context())
        if target is None:
            hits += bool(baseline_gate.failures(verdicts, strict=True))
        else:
            hits += verdict_of(verdicts, target).status == "regressed"
    return hits / runs


SIM_LAYOUT = [(m, b, 5, (0, 1, 2), 0.4, 0.4) for m in "abcde" for b in (8, 4)]


@pytest.mark.slow
def test_false_regressions_per_run_at_most_5_percent_with_a_seed_effect():
    """50 keys, 3 seeds, a seed shift as large as the per-case noise, no change at all: a per-key
    test that ignored the shared seed shift failed 6.5% of such runs here; this gate must stay <= 5%."""
    rate = gate_rate(400, SIM_LAYOUT)
    assert rate <= 0.05, rate


def smoke_layout():
    """The committed smoke baseline's groups, replication and measured noise, as a simulation layout."""
    if not SMOKE_BASELINE.is_file():
        pytest.skip("no committed smoke baseline")
    saved = baseline.load_baseline(SMOKE_BASELINE)
    layout = []
    for name, noise in sorted(saved.noise.items()):
        model, bits = name.split("/w")
        group = [e for e in saved.entries.values() if e.model == model and e.weight_bits == int(bits)]
        keys, seeds, _ = baseline.complete_table(group)
        if noise.sd_pp is None:
            pytest.fail(f"{SMOKE_BASELINE}: group {name} has no noise estimate: re-save it with --qat-save-baseline")
        if noise.case_sd_pp is None:  # one key: only the total is known; split it evenly
            split = noise.sd_pp / 2 ** 0.5
            layout.append((model, int(bits), len(keys), seeds, split, split))
        else:
            layout.append((model, int(bits), len(keys), seeds, noise.seed_sd_pp, noise.case_sd_pp))
    return layout


@pytest.mark.slow
def test_no_false_regression_at_the_smoke_tiers_measured_noise():
    rate = gate_rate(300, smoke_layout())
    assert rate <= 0.05, rate


def median_noise(layout):
    return float(np.median([g[4] for g in layout])), float(np.median([g[5] for g in layout]))


@pytest.mark.slow
def test_power_for_a_2pp_regression_at_the_smoke_tiers_replication_and_median_noise():
    """The committed smoke baseline's layout (keys and seeds per model and width) with every group at
    the median of its measured seed and per-case noise: one key 2 pp worse is caught in >= 80% of
    runs. Noisier groups need a larger effect: `python -m harness baseline` prints the power per group."""
    layout = smoke_layout()
    seed_sd, case_sd = median_noise(layout)
    typical = [(m, b, k, seeds, seed_sd, case_sd) for m, b, k, seeds, _, _ in layout]
    model, bits, keys = next((g[0], g[1], g[2]) for g in typical if g[0] == "mlp" and g[2] > 1)
    power = gate_rate(200, typical, shift={(model, bits, keys): 2.0}, target=f"{model}-last{keys}-w{bits}a8")
    assert power >= 0.80, (seed_sd, case_sd, power)
