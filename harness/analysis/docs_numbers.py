"""docs/results.md's measured numbers, regenerated from the committed files, never typed. Pure.

Each block of the document between ``<!-- generated: NAME ... -->`` and ``<!-- end generated: NAME -->``
is rewritten from its source:

- ``noise``: the seed-to-seed SD of the drop per model and width from results/baselines/smoke.json
  (its ``noise``: pooled SD, the shift a seed gives every configuration alike, the per-case rest, dof);
- ``reference``: from results/reference's records, the last-N drop of each (model, width, method) as the
  report states it (a trend, or "no trend detectable" with its seed-level mean drop), and the
  pre-registered last-vs-first family with each declared test's Holm-adjusted p and verdict;
- ``reference-run``: what results/reference is: its cases and statuses, the commits and CPU kinds that made
  them, each model's seeds and test-set size;
- ``unit-costs``: results/reference's single-unit and per-kind costs (harness/analysis/unit_costs.py);
- ``frontier``: results/reference's matched-bytes comparisons against last-N, with the matched points
  left out for comparing identical unit sets;
- ``ties``: results/reference's tie check on the group the issue named (cnn-last1-w8a8-ptq) and on each
  model's group with the most tied quantized outputs (harness/analysis/tie_direction.py);
- ``gate-power``: the regression gate's false failures and power on resampled real seeds, from
  results/reference/gate-power.json (written by ``python -m harness.analysis.gate_power --save``, seeded:
  tests/test_gate_power.py recomputes it);
- ``machine-spread``: how far each model's drops moved between the committed smoke baselines (smoke.json
  and results/baselines/spread-sources/: other CPU kinds, oneDNN off), and the spread the gate reads;
- ``baseline-power``: the power per group that ``python -m harness baseline`` prints for
  results/baselines/smoke.json (a rerun with its seeds and noise; seeded Gaussian draws, about a second).

- ``findings`` (in README.md): results/reference's findings paragraph (harness/analysis/findings.py), the
  one its report opens with.

``python -m harness.analysis.docs_numbers`` rewrites docs/results.md and README.md; ``--check`` exits 1 when a block
differs from what the committed files give (tests/test_docs_numbers.py runs that check).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

from harness.analysis import drop_fit, findings, fit_text, frontier, gate_power, order_test, tie_direction, unit_costs
from harness.results import machines
from harness.results import records as _records

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "results.md"
README = ROOT / "README.md"
BASELINE = ROOT / "results" / "baselines" / "smoke.json"
REFERENCE = ROOT / "results" / "reference"
COMMAND = "python -m harness.analysis.docs_numbers"


def _pp(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def noise_block(baseline: Path = BASELINE) -> list:
    """The smoke baseline's noise per model and width (pp)."""
    noise = json.loads(Path(baseline).read_text())["noise"]
    lines = ["| model / bits | SD | seed shift | per case | dof |", "|---|---|---|---|---|"]
    for key in sorted(noise, key=lambda k: (k.split("/")[0], -int(k.split("/w")[1]))):
        entry = noise[key]
        model, bits = key.split("/w")
        lines.append(f"| {model} / W{bits} | {_pp(entry.get('sd_pp'))} | {_pp(entry.get('seed_sd_pp'))} "
                     f"| {_pp(entry.get('case_sd_pp'))} | {entry.get('df')} |")
    return lines


def reference_block(run_dir: Path = REFERENCE) -> list:
    """The reference run's last-N drops and its last-vs-first family."""
    records, _ = _records.read_case_records(Path(run_dir))
    measured = drop_fit.measured(records)
    lines = ["Last-N drop (QAT and PTQ), as the report states it:", ""]
    for fit in drop_fit.fit_records(measured, ("last",)):
        lines.append(f"- {fit.model} W{fit.weight_bits} {fit.method.upper()}: {fit_text.short(fit)}")
    comparisons = order_test.compare_orders(measured)
    lines += ["", order_test.family_text(comparisons), ""]
    for c in comparisons:
        t = c.test
        if not c.primary:
            continue
        holm = f"Holm {t.p_holm:.3g}" if t.counted else "not counted"
        lines.append(f"- {c.model} W{c.weight_bits} {c.method.upper()}: the last N cost {t.mean_diff_pp:+.2f} pp less "
                     f"({order_test.MATCHING_TEXT[t.matching]}, {t.n_seeds} seeds, sign-flip p = {t.p_value:.3g}, "
                     f"{holm}): {t.verdict}")
    return lines


def unit_costs_block(run_dir: Path = REFERENCE) -> list:
    """The reference run's single-unit and per-kind costs, as the report's verdicts state them."""
    records, _ = _records.read_case_records(Path(run_dir))
    measured = drop_fit.measured(records)
    return [f"- {line}" for line in unit_costs.verdicts(measured)] or ["- no single or type records"]


def frontier_block(run_dir: Path = REFERENCE) -> list:
    """The reference run's matched-bytes comparisons against last-N."""
    records, _ = _records.read_case_records(Path(run_dir))
    lines = ["| model | method | comparison | pairs | drop − last-N drop, pp [95% t] | Holm p | verdict | identical, excluded |",
             "|---|---|---|---|---|---|---|---|"]
    for f in frontier.for_report(records):
        for c in f.comparisons:
            holm = "–" if math.isnan(c.p_holm) else f"{c.p_holm:.3g}"
            lines.append(f"| {f.model} | {f.method} | {c.name} | {c.pairs} | "
                         f"{frontier.interval_text(c.mean_diff, c.low, c.high)} | {holm} | {c.verdict} | {c.identical} |")
    return lines


TIE_GROUP = "cnn-last1-w8a8-ptq"  # issue 32: its argmax drop was the old reference's headline artifact


def ties_block(run_dir: Path = REFERENCE) -> list:
    """Where the changed predictions went in the named group and each model's most-tied group."""
    run_dir = Path(run_dir)
    records, _ = _records.read_case_records(run_dir)
    found = tie_direction.moves(records, tie_direction.reader(run_dir))
    if not found:
        return ["- no records with tie sizes (written before tie-aware accuracy, schema 6)"]
    shown = [m for m in found if m.label == TIE_GROUP]
    for model in sorted({m.label.split("-")[0] for m in found}):
        top = next(m for m in found if m.label.split("-")[0] == model)
        if top not in shown and top.quant_ties:
            shown.append(top)
    return [f"- {m.sentence()}" for m in shown]


def _seed_ranges(seeds) -> str:
    """"0–9, 12" from {0, ..., 9, 12}."""
    seeds, parts = sorted(seeds), []
    for seed in seeds:
        if parts and seed == parts[-1][1] + 1:
            parts[-1][1] = seed
        else:
            parts.append([seed, seed])
    return ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in parts)


def run_block(run_dir: Path = REFERENCE) -> list:
    """What the reference run is: cases and statuses, the commits and CPU kinds that made them, per model
    its seeds and test-set size."""
    records, problems = _records.read_case_records(Path(run_dir))
    status = Counter(str(r.get("status")) for r in records)
    commits = Counter(str((r.get("env") or {}).get("git_commit") or "unknown")[:7] for r in records)
    cpus = Counter(machines.describe_kind(machines.machine_kind((r.get("env") or {}).get("machine"))) for r in records)
    lines = [f"- {len(records):,} cases: " + ", ".join(f"{n:,} {s}" for s, n in status.most_common())
             + (f"; {len(problems)} unreadable" if problems else ""),
             "- commit: " + ", ".join(f"{c} ({n:,} cases)" for c, n in commits.most_common()),
             "- CPU: " + ", ".join(f"{c} ({n:,} cases)" for c, n in cpus.most_common())]
    per_model = defaultdict(lambda: (set(), set(), Counter()))
    for r in records:
        seeds, tests, count = per_model[str(r.get("model"))]
        seeds.add(int(r.get("seed") or 0))
        tests.add(r.get("n_test"))
        count["cases"] += 1
    for model, (seeds, tests, count) in sorted(per_model.items()):
        sizes = ", ".join(f"{n:,}" for n in sorted(t for t in tests if isinstance(t, int))) or "unknown"
        lines.append(f"- {model}: {count['cases']:,} cases, seeds {_seed_ranges(seeds)}, {sizes} test examples")
    return lines


def findings_block(run_dir: Path = REFERENCE) -> list:
    """The README's summary: the reference run's findings paragraph, as its report opens with it."""
    records, _ = _records.read_case_records(Path(run_dir))
    return [findings.paragraph(records) or "No measured records in results/reference."]


def _group_order(group: str) -> tuple:
    model, width, method = group.split("/")
    return model, -int(width.lstrip("w")), method


def gate_power_block(path: Path = gate_power.SAVED) -> list:
    """The gate's simulated false-failure rates and power per group, as the committed file holds them."""
    saved = json.loads(Path(path).read_text())
    if saved.get("format") != gate_power.FORMAT:
        raise ValueError(f"{path}: not a {gate_power.FORMAT} file")
    margins = sorted({m for layout in saved["layouts"].values() for m in layout["false_failures"]}, key=lambda m: -float(m))
    lines = ["| layout | " + " | ".join(f"false failures, min. effect {m} pp" for m in margins)
             + " | power, one configuration 2 pp worse | 1 pp worse (same order) |",
             "|---|" + "---|" * (len(margins) + 2)]
    for name, layout in saved["layouts"].items():
        groups = sorted(layout["power"]["2"], key=_group_order)
        two = ", ".join(f"**{g} {p:.0%}**" if p < 0.8 else f"{g} {p:.0%}" for g in groups
                        for p in [layout["power"]["2"][g]])
        one = ", ".join(f"{layout['power']['1'][g]:.0%}" for g in groups)
        rates = " | ".join(f"{layout['false_failures'][m]:.1%}" if m in layout["false_failures"] else "–" for m in margins)
        lines.append(f"| {name} ({layout['text']}: {layout['configurations']} configurations) | {rates} | {two} | {one} |")
    first = next(iter(saved["layouts"].values()))
    draws = ", ".join(f"{n:,} at {m} pp" for m, n in first["false_failure_draws"].items())
    lines += ["", f"Draws per false-failure rate: {draws}; per group for power: {first['power_draws']:,} "
              f"(minimum effect {saved['power_min_effect_pp']:g} pp); {saved['seeds_per_run']} vs "
              f"{saved['seeds_per_run']} of {first['seeds']} seeds of `{saved['source']}`. Bold: below 80% at 2 pp."]
    return lines


def baseline_power_block(baseline: Path = BASELINE) -> list:
    """The power per group of a rerun of the smoke baseline, as `python -m harness baseline` prints it."""
    from harness.results.baseline import load_baseline

    lines = ["| group | configurations | seeds | own SD, pp | power, one configuration 2 pp worse | 1 pp worse |",
             "|---|---|---|---|---|---|"]
    for group, configs, seeds, sd, shares in gate_power.baseline_power(load_baseline(Path(baseline))):
        two = f"**{shares[2.0]:.0%}**" if shares[2.0] < 0.8 else f"{shares[2.0]:.0%}"
        lines.append(f"| {group} | {configs} | {seeds} | {_pp(sd)} | {two} | {shares[1.0]:.0%} |")
    return lines


SPREAD_SOURCES = ROOT / "results" / "baselines" / "spread-sources"


def _kind_label(machine: dict, versions: dict) -> str:
    """A short name of a baseline's machine, e.g. 'Intel Xeon, AMX, oneDNN off'."""
    cpu = (machine or {}).get("cpu") or {}
    name = " ".join(w for w in str(cpu.get("model", "unknown CPU")).replace("(R)", "").split() if w != "Processor")
    flags = set(cpu.get("flags") or ())
    isa = "AMX" if "amx_int8" in flags else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""
    off = (versions or {}).get("numerics.onednn_opts") == "0"
    return ", ".join(part for part in (name, isa, "oneDNN off" if off else "") if part)


def machine_spread_block(baseline: Path = BASELINE, sources: Path = SPREAD_SOURCES,
                         spread_file: Path = BASELINE.parent / "machine-spread.json") -> list:
    """Each pair of the committed smoke baselines (smoke.json and spread-sources/*.json): the mean shift of
    each model's drop (largest case move) over the configurations and seeds they share; then the spread
    per model the gate reads (machine-spread.json)."""
    from itertools import combinations

    from harness.results.baseline import load_baseline
    from harness.results.machines import model_shifts, load_spread

    saved = [load_baseline(path) for path in [Path(baseline), *sorted(Path(sources).glob("*.json"))]]
    models = sorted({e.model for b in saved for e in b.entries.values()})
    lines = ["| run A | run B | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for a, b in combinations(saved, 2):
        shifts = model_shifts(a.entries, b.entries)
        cells = [f"{shifts[m][0]:+.2f} ({shifts[m][1]:.2f})" if m in shifts else "–" for m in models]
        lines.append(f"| {_kind_label(a.machine, a.versions)} | {_kind_label(b.machine, b.versions)} | "
                     + " | ".join(cells) + " |")
    lines += ["", "| model | spread the gate reads, pp | pairs |", "|---|---|---|"]
    for model, entry in sorted(load_spread(spread_file).items()):
        lines.append(f"| {model} | {_pp(entry['spread_pp'])} | {entry.get('pairs', '–')} |")
    return lines


BLOCKS = {"noise": (noise_block, "results/baselines/smoke.json"), "reference": (reference_block, "results/reference"),
          "reference-run": (run_block, "results/reference"),
          "frontier": (frontier_block, "results/reference"), "unit-costs": (unit_costs_block, "results/reference"),
          "ties": (ties_block, "results/reference"),
          "gate-power": (gate_power_block, "results/reference/gate-power.json"),
          "baseline-power": (baseline_power_block, "results/baselines/smoke.json"),
          "machine-spread": (machine_spread_block, "results/baselines/smoke.json, spread-sources/, machine-spread.json")}


def render(text: str, blocks: dict) -> str:
    """``text`` with every generated block replaced by ``blocks[name]`` (lines); a missing block is an error."""
    for name, lines in blocks.items():
        pattern = re.compile(rf"(<!-- generated: {name} [^\n]*-->\n)(.*?)(<!-- end generated: {name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"docs block {name!r} not found (<!-- generated: {name} ... --> ... <!-- end generated: {name} -->)")
        text = pattern.sub(lambda m: m.group(1) + "\n".join(lines) + "\n" + m.group(3), text)
    return text


README_BLOCKS = {"findings": (findings_block, "results/reference")}


def generated(blocks: dict = BLOCKS) -> dict:
    return {name: make() for name, (make, _) in blocks.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a document differs, write nothing")
    args = parser.parse_args(argv)
    status = 0
    for doc, blocks in ((DOC, BLOCKS), (README, README_BLOCKS)):
        old = doc.read_text()
        new = render(old, generated(blocks))
        if args.check:
            if new != old:
                print(f"{doc}: generated numbers are out of date; run {COMMAND}", file=sys.stderr)
                status = 1
            continue
        if new != old:
            _records.write_text_atomic(doc, new)
        print(f"{doc}: {'rewritten' if new != old else 'up to date'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
