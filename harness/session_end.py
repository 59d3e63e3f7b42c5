"""The end of a run, one implementation for a pytest session and ``python -m harness merge``: merge the
case records, save a baseline, gate against one, check the drop targets, write the report, check that
sizes fall with N. A merged sharded run is therefore gated exactly like a single run.

Each step is guarded: a failing step is one line in ``problems`` and the steps after it still run, so
measured work is never thrown away. Pure: no pytest, no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from harness.design import registry
from harness.errors import describe
from harness.results import gates, records, rescue, versions


@dataclass(frozen=True)
class EndOptions:
    """What the end of a run needs to know besides its folder."""

    baseline: object = None  # a loaded harness.results.baseline.Baseline, or None
    strict_baseline: bool = False
    drop_tolerance: Optional[float] = None
    expected: Optional[frozenset] = None  # case ids this run collected (None: unknown, e.g. an xdist controller)
    narrowed: bool = False  # part of the tier's grid left out on purpose: absent baseline cases are "not selected"
    save_baseline: Optional[str] = None
    tier: Optional[str] = None
    budget: Optional[float] = None
    size_budget: Optional[int] = None


@dataclass
class RunEnd:
    """What the end of a run found: the merged records and every verdict, for the terminal or the CLI."""

    merged: list = field(default_factory=list)  # what every later step uses: one code version per configuration
    left_out: list = field(default_factory=list)  # records of an older code version (still in records.jsonl)
    merge_problems: list = field(default_factory=list)
    verdicts: tuple = ()
    inconclusive: list = field(default_factory=list)
    report_path: Optional[Path] = None
    report: object = None  # the written harness.analysis.report.Report (its analysis serves the summary too)
    notes: list = field(default_factory=list)
    problems: list = field(default_factory=list)


def finish_run(run_dir: Path, opts: EndOptions, unwritten=()) -> RunEnd:
    """Run every step of the end of a run over ``run_dir`` (plus records it could not hold, ``unwritten``)."""
    end = RunEnd()
    for name, step in (("merge", _merge), ("baseline save", _save_baseline), ("baseline gate", _gate),
                       ("drop targets", _targets), ("report", _report), ("size checks", _sizes)):
        try:
            end.problems += step(Path(run_dir), opts, end, unwritten) or []
        except Exception as exc:  # noqa: BLE001 - the next steps must still run
            end.problems.append(f"session end: {name} failed: {describe(exc)}")
    return end


def _merge(run_dir: Path, opts: EndOptions, end: RunEnd, unwritten) -> list:
    merged, end.merge_problems = rescue.merge_run(run_dir, unwritten)
    # records.jsonl keeps them all; the baseline, gate, targets and report never average two code versions
    end.merged, end.left_out, mixed = versions.one_version(merged)
    end.merge_problems += mixed
    return end.merge_problems


def _save_baseline(run_dir: Path, opts: EndOptions, end: RunEnd, unwritten) -> list:
    if not opts.save_baseline:
        return []
    from harness.results.baseline import save_baseline

    target = Path(opts.save_baseline)
    return rescue.elsewhere(target, rescue.rescue_dir(run_dir) / target.name, lambda path: save_baseline(
        end.merged, path, tier=opts.tier, machine=records.machine()), "baseline")[1]


def _gate(run_dir: Path, opts: EndOptions, end: RunEnd, unwritten) -> list:
    """The seed-level regression gate (harness/results/baseline_gate.py) over every key of the run and the baseline."""
    if opts.baseline is None:
        return []
    from harness.results import baseline_gate

    context = baseline_gate.context_for(registry.thresholds_of, opts.drop_tolerance, expected=opts.expected,
                                        narrowed=opts.narrowed)
    end.verdicts = baseline_gate.gate(end.merged, opts.baseline, context)
    baseline_gate.record_verdicts(end.merged, end.verdicts)
    return baseline_gate.failures(end.verdicts, opts.strict_baseline)


def _targets(run_dir: Path, opts: EndOptions, end: RunEnd, unwritten) -> list:
    failures, end.inconclusive = gates.drop_targets(end.merged, registry.thresholds_of)
    return failures


def _report(run_dir: Path, opts: EndOptions, end: RunEnd, unwritten) -> list:
    from harness.analysis import report

    def write(folder):
        end.report = report.write_report(end.merged, folder, budget_pp=opts.budget, size_budget=opts.size_budget,
                                         problems=end.merge_problems)
        return end.report.path

    end.report_path, trouble = rescue.elsewhere(run_dir, rescue.rescue_dir(run_dir), write, "report")
    return trouble


def _sizes(run_dir: Path, opts: EndOptions, end: RunEnd, unwritten) -> list:
    end.notes = gates.size_not_decreasing(end.merged, "tflite_bytes")
    return gates.size_not_decreasing(end.merged)
