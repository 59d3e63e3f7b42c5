"""The regression gate's error rates, measured by resampling real seeds. Pure (numpy; no TensorFlow).

A run with many seeds (results/reference: 10 seeds of mlp and cnn) gives, per seed, the drop of every
configuration: one vector per seed, which keeps the correlations between configurations (a seed's float
control is shared by all of them) and the heavy tails (one bad seed) that a Gaussian model would miss.
One simulated gate draws 2 x SEEDS distinct seeds: the first SEEDS are the baseline, the others the run
(relabelled 0..SEEDS-1 in both, as a rerun would be), and runs the gate's own judgement
(baseline_gate.judge) on the baseline's machine. With no change injected, any failing verdict is a false
failure; with one configuration's run drops raised by EFFECT pp, power is the share of draws in which
that configuration regressed (per prior group: model x width x method, the configuration drawn at random
within it). ``python -m harness.analysis.gate_power [RUN] --save results/reference/gate-power.json`` prints the
rates and writes them where docs/results.md's ``gate-power`` block is generated from
(harness/analysis/docs_numbers.py). Every draw comes from a fixed RNG seed: the same records give the same file.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from harness.results import baseline_gate, gate_stats
from harness.results.baseline import BaselineEntry, SeedValue, baseline_key
from harness.results.records import MEASURED, read_case_records, write_text_atomic

SEEDS = 3  # per run, as the smoke tier and a rerun of it
REFERENCE = Path(__file__).resolve().parents[2] / "results" / "reference"
# the smoke tier's mlp and cnn configurations (harness/design/registry.py), found in the reference run
SMOKE = re.compile(r"^(mlp-last[0135]|cnn-last[015])-w[48]a8$")
SAVED = REFERENCE / "gate-power.json"  # the committed rates docs/results.md states
FORMAT = "qatbench-gate-power"
DRAWS = 1500  # per false-failure rate at minimum effects MIN_EFFECTS; power and minimum effect 0: DRAWS // 5
MIN_EFFECTS = (1.0, 0.5)  # the gate's default and --qat-drop-tolerance 0.5; 0 (the tests alone) is measured too
EFFECTS = (2.0, 1.0)  # one configuration this many pp worse (power, at the 1 pp minimum effect)
POWER_MIN_EFFECT = 1.0
LAYOUT_TEXT = {"smoke": "mlp N = 1, 3, 5 and cnn N = 1, 5, W4 and W8 QAT",
               "full mlp+cnn grid": "every mlp and cnn configuration of the run: QAT W4/W8, PTQ W8"}


def seed_table(records) -> tuple:
    """(keys, {key: (model, bits, n)}, seeds, keys x seeds drops) of the models measured in at least
    2 x SEEDS seeds, over the seeds in which every key of the model was measured."""
    cells, meta = defaultdict(dict), {}
    for r in records:
        if r.get("status") in MEASURED and r.get("accuracy_drop_pp") is not None and r.get("case_id"):
            key = baseline_key(r)
            cells[key][int(r.get("seed") or 0)] = float(r["accuracy_drop_pp"])
            meta[key] = (r["model"], r["weight_bits"], r["n"])
    seeds = sorted(set.intersection(*[set(v) for v in cells.values()])) if cells else []
    keys = sorted(k for k in cells if len(seeds) >= 2 * SEEDS)
    return keys, meta, seeds, np.array([[cells[k][s] for s in seeds] for k in keys], float)


def _entries(keys, meta, drops) -> dict:
    return {k: BaselineEntry(k, *meta[k], seeds={s: SeedValue(f"{k}-s{s}", "h", float(d)) for s, d in enumerate(row)})
            for k, row in zip(keys, drops)}


def _context(min_effect: float) -> baseline_gate.GateContext:
    return baseline_gate.GateContext(min_effect_pp=lambda model: min_effect, size_growth_rel=lambda model: 0.01)


def one_gate(keys, meta, table, rng, min_effect: float, raise_key=None, effect: float = 0.0) -> dict:
    """The gate's verdicts on one draw of baseline and run seeds ({key: KeyVerdict})."""
    chosen = rng.permutation(table.shape[1])[: 2 * SEEDS]
    old, new = table[:, chosen[:SEEDS]], table[:, chosen[SEEDS:]].copy()
    if raise_key is not None:
        new[keys.index(raise_key)] += effect
    comparable = defaultdict(list)
    for k in keys:
        comparable[meta[k][0]].append(k)
    return baseline_gate.judge(_entries(keys, meta, old), _entries(keys, meta, new), comparable,
                               _context(min_effect), True, {})


def false_failures(keys, meta, table, draws: int, min_effect: float, rng_seed: int = 0) -> float:
    """Share of no-change draws in which any verdict fails."""
    rng = np.random.default_rng(rng_seed)
    failed = sum(any(v.fails(True) for v in one_gate(keys, meta, table, rng, min_effect).values())
                 for _ in range(draws))
    return failed / draws


def groups_of(keys, meta) -> dict:
    """{prior group: [keys that are not the float control]}."""
    out = defaultdict(list)
    for k in keys:
        model, bits, n = meta[k]
        if not gate_stats.is_control(k, n):
            out[gate_stats.prior_group(model, bits, k)].append(k)
    return dict(sorted(out.items()))


def power(keys, meta, table, draws: int, effect: float, min_effect: float, rng_seed: int = 0) -> dict:
    """{prior group: share of ``draws`` draws in which one of its configurations, raised by ``effect`` pp,
    regressed}."""
    rng = np.random.default_rng(rng_seed)
    out = {}
    for group, members in groups_of(keys, meta).items():
        hits = 0
        for _ in range(draws):
            key = members[rng.integers(len(members))]
            hits += one_gate(keys, meta, table, rng, min_effect, key, effect)[key].status == "regressed"
        out[group] = hits / draws
    return out


def baseline_power(saved, effects=(2.0, 1.0), min_effect: float = 1.0, alpha: float = baseline_gate.FAMILY_ALPHA,
                   draws: int = 20000) -> list:
    """[(prior group, configurations, seeds, median own SD, {effect: power})] from a baseline alone: a rerun
    with the baseline's seeds and each configuration's measured noise (its contrast SD with the group prior,
    as the gate estimates it), one configuration ``effect`` pp worse, tested at Holm's strictest level over
    the baseline's configurations and required to reach ``min_effect`` (Gaussian draws of the contrast and
    its variance estimate; the resampling above is the check on real seeds)."""
    by_model = defaultdict(dict)
    for key, entry in saved.entries.items():
        by_model[str(entry.model)][key] = entry
    rows, tested, shifts = [], [], 0
    for model, entries in sorted(by_model.items()):
        test = baseline_gate.model_tests(list(entries), entries, entries)
        if test is None:
            continue
        if len(test.keys) == 1 and test.seed_sd is not None:  # one configuration: its model shift tests it
            shifts += 1
            tested.append((entries[test.keys[0]], test.keys[0], test.seed_sd, test.shift_df, len(test.seeds), "shift"))
        tested += [(entries[k], k, sd, test.contrast_df[k], len(test.seeds), "contrast")
                   for k, sd in test.contrast_sd.items()]
    levels = {"contrast": alpha / 2 / max(len(tested) - shifts, 1), "shift": alpha / 2 / max(len(by_model), 1)}
    rng = np.random.default_rng(0)
    groups = defaultdict(list)
    for entry, key, sd, df, seeds, kind in tested:
        groups[gate_stats.prior_group(entry.model, entry.weight_bits, key)].append((sd, df, seeds, kind))
    for group, members in sorted(groups.items()):
        shares = {e: float(np.mean([_power(e, sd, df, seeds, min_effect, levels[kind], rng, draws)
                                    for sd, df, seeds, kind in members])) for e in effects}
        rows.append((group, len(members), members[0][2], float(np.median([m[0] for m in members])), shares))
    return rows


def _power(effect, sd, df, seeds, min_effect, level, rng, draws) -> float:
    """P(estimate >= min_effect and its one-sided t significant at ``level``) for a rerun with the
    baseline's seeds and noise (``df``: the gate's, both runs' seeds and the prior)."""
    from scipy import stats

    se = sd * np.sqrt(2 / seeds)
    estimate = rng.normal(effect, se, draws)
    est_se = se * np.sqrt(rng.chisquare(df, draws) / df)
    t = estimate / np.where(est_se > 0, est_se, np.inf)
    return float(np.mean((estimate >= min_effect) & (t > stats.t.ppf(1 - level, df))))


def noise_lines(saved) -> list:
    """Per (model, bits): the measured noise; per group (model/width/method): the gate's power for one
    configuration 2 and 1 pp worse, from this baseline's own noise (harness/analysis/gate_power.py)."""
    lines = [f"  {'model/bits':<14} {'SD':>6} {'seed SD':>8} {'case SD':>8} {'df':>3}"]
    for name, noise in sorted(saved.noise.items()):
        lines.append(f"  {name:<14} " + " ".join(f"{'-' if v is None else f'{v:.2f}':>{w}}" for v, w in (
            (noise.sd_pp, 6), (noise.seed_sd_pp, 8), (noise.case_sd_pp, 8))) + f" {noise.df:>3}")
    lines.append(f"  {'group':<18} {'configs':>7} {'seeds':>5} {'own SD':>6}  power: 1 configuration 2 pp / 1 pp "
                 "worse (minimum effect 1 pp, a rerun with these seeds and noise)")
    for group, configs, seeds, sd, shares in baseline_power(saved):
        lines.append(f"  {group:<18} {configs:>7} {seeds:>5} {sd:>6.2f}  {shares[2.0]:.0%} / {shares[1.0]:.0%}"
                     + ("  (below 80%)" if shares[2.0] < 0.8 else ""))
    return lines


def layouts(records) -> dict:
    """{"smoke": ..., "full mlp+cnn grid": ...}: (keys, meta, seeds, table) each."""
    keys, meta, seeds, table = seed_table([r for r in records if r.get("model") in ("mlp", "cnn")])
    smoke = [i for i, k in enumerate(keys) if SMOKE.match(k)]
    return {"smoke": ([keys[i] for i in smoke], meta, seeds, table[smoke]), "full mlp+cnn grid": (keys, meta, seeds, table)}


def measure_layout(keys, meta, seeds, table, draws: int = DRAWS) -> dict:
    """One layout's false-failure rates (per minimum effect, with the draws behind each) and power per group."""
    small = max(draws // 5, 50)
    counts = {f"{m:g}": draws for m in MIN_EFFECTS} | {"0": small}
    return {"configurations": len(keys), "seeds": len(seeds),
            "false_failures": {m: false_failures(keys, meta, table, n, float(m)) for m, n in counts.items()},
            "false_failure_draws": counts, "power_draws": small,
            "power": {f"{e:g}": power(keys, meta, table, small, e, POWER_MIN_EFFECT) for e in EFFECTS}}


def measure_run(run_dir: Path, draws: int = DRAWS) -> dict:
    """Every layout of ``run_dir``'s records, as the committed file holds them (deterministic: fixed RNG seeds)."""
    records, _ = read_case_records(Path(run_dir))
    run = Path(run_dir).resolve()
    root = REFERENCE.parents[1]
    source = str(run.relative_to(root)) if run.is_relative_to(root) else str(run)
    return {"format": FORMAT, "source": source, "seeds_per_run": SEEDS, "draws": draws,
            "power_min_effect_pp": POWER_MIN_EFFECT,
            "layouts": {name: {"text": LAYOUT_TEXT.get(name, name), **measure_layout(*layout, draws=draws)}
                        for name, layout in layouts(records).items()}}


def lines_of(saved: dict) -> list:
    lines = []
    for name, layout in saved["layouts"].items():
        lines.append(f"{name}: {layout['configurations']} configurations, {layout['seeds']} seeds, "
                     f"{saved['seeds_per_run']} vs {saved['seeds_per_run']} per draw")
        for m, rate in layout["false_failures"].items():
            lines.append(f"  false failures at minimum effect {m} pp: {rate:.1%} ({layout['false_failure_draws'][m]} draws)")
        for effect, shares in layout["power"].items():
            lines.append(f"  power, one configuration {effect} pp worse ({layout['power_draws']} draws per group): "
                         + ", ".join(f"{g} {p:.0%}" for g, p in shares.items()))
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.analysis.gate_power", description=__doc__.split("\n")[0])
    parser.add_argument("run", nargs="?", default=str(REFERENCE), help="a run folder with >= 6 seeds per model")
    parser.add_argument("--draws", type=int, default=DRAWS)
    parser.add_argument("--save", metavar="JSON", help=f"write the rates as JSON (the docs' source: {SAVED.name} "
                                                      "in results/reference)")
    args = parser.parse_args(argv)
    saved = measure_run(Path(args.run), args.draws)
    print("\n".join(lines_of(saved)))
    if args.save:
        write_text_atomic(Path(args.save), json.dumps(saved, indent=1) + "\n")
        print(f"saved {args.save}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
