"""What the `python -m harness` commands read from the user: run folders and baseline files, and the one
error type they report as a single line (exit status 2)."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.errors import one_line
from harness.results import records as _records


class BadInput(Exception):
    """A user error: reported as one line, exit status 2."""


def load_run(results: str) -> list:
    """Records of a run folder: cases/*.json if present, else records.jsonl; bad records skipped with a note."""
    run_dir = Path(results)
    if not run_dir.is_dir():
        raise BadInput(f"results folder not found: {run_dir}")
    merged, problems = run_dir / "records.jsonl", []
    cases = run_dir / _records.CASES_DIR
    try:
        if any(cases.glob("*.json")) or not merged.is_file():  # the case files are the source of truth
            records, problems = _records.read_case_records(run_dir)
        else:  # a copied records.jsonl without its cases/
            records = _records.load_jsonl(merged, problems)
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot read {merged}: {one_line(exc)}")
    from harness.results import versions  # scipy, through the baseline key: not for every command

    records, _left_out, mixed = versions.one_version(records)  # never one mean over two code versions
    for problem in problems + mixed:  # malformed or unknown-schema records: skipped, one line each
        print(f"note: {problem}", file=sys.stderr)
    if not records:
        raise BadInput(f"no records in {run_dir} (expected records.jsonl or cases/*.json)")
    return records


def baseline_file(path):
    """The baseline at ``path`` (None for None); a bad file is BadInput (one line)."""
    if path is None:
        return None
    from harness.results.baseline import BaselineError, load_baseline

    try:
        return load_baseline(path)
    except BaselineError as exc:
        raise BadInput(str(exc)) from None
