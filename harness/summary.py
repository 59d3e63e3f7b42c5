"""The qatbench section of pytest's terminal summary: one line per case, then the session's verdicts."""

from __future__ import annotations

from harness.results.baseline_gate import counts
from harness.case.paired import drop_label


def case_lines(merged) -> list:
    lines = [f"{'case':<28} {'status':<7} {'drop pp [95% paired CI] (~: noise)':<34} {'tflite B':>10} "
             f"{'x smaller':>9} {'qat/float':>9}"]
    for r in merged:
        if r.get("tflite_bytes"):
            ratio = "-" if r.get("step_ratio") is None else f"{r['step_ratio']:.2f}"  # PTQ, N = 0, untimed seeds
            drop = drop_label(r.get("accuracy_drop_pp"), r.get("drop_ci95_pp"))
            lines.append(f"{r['case_id']:<28} {r['status']:<7} {drop:<34} {r['tflite_bytes']:>10} "
                         f"{r['control_tflite_bytes'] / r['tflite_bytes']:>9.2f} {ratio:>9}")
        else:
            lines.append(f"{r['case_id']:<28} {r['status']:<7} {r.get('error') or ''}")
    return lines


def gate_lines(verdicts, baseline) -> list:
    if not verdicts:
        return []
    tally = ", ".join(f"{n} {status}" for status, n in sorted(counts(verdicts).items()))
    lines = [f"baseline gate ({baseline.path}): {tally}"]
    lines += [f"  {v.status}: {v.message}" for v in verdicts if v.status in ("stale", "noted")]  # noted: latency, other CPU kind
    skipped = [v.key for v in verdicts if v.status == "not selected"]
    if skipped:
        lines.append(f"  not selected in this run: {len(skipped)} baseline configurations ({skipped[0]}, ...)")
    return lines


def session_lines(end, baseline, options, run_dir) -> list:
    """Everything the session prints after its cases: ``end`` is what harness/session_end.py found."""
    if not end.merged:
        return []
    from harness.analysis import report

    lines = case_lines(end.merged) + gate_lines(end.verdicts, baseline)
    lines += end.inconclusive
    lines += report.terminal_summary(end.merged, budget_pp=options.budget, size_budget=options.size_budget,
                                     report_path=end.report_path, written=end.report)
    lines += [f"note: {note} (file metadata, not weights)" for note in end.notes]
    lines.append(f"records: {run_dir / 'records.jsonl'}")
    return lines
