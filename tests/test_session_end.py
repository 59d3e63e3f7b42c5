"""One end of a run for a pytest session and for ``python -m harness merge`` (harness/session_end.py): a
merged sharded folder is gated exactly like a single run. Pure: no TensorFlow."""

import json
import shutil
from types import SimpleNamespace

import pytest

from factories import make_record
from harness import pytest_options
from harness.__main__ import main
from harness.results import baseline, records


def write_run(folder, rise_pp: float = 0.0):
    """mlp last-1 and last-3 over 3 seeds; last-3's drops far above its target, and weight bytes that
    grow with N (a size problem); ``rise_pp`` raises last-1's drops (a regression against a baseline)."""
    out = []
    for seed in range(3):
        for n, drop in ((1, 0.2 + rise_pp + 0.1 * seed), (3, 6.0 + 0.1 * seed)):
            record = make_record(model="mlp", n=n, seed=seed, accuracy_drop_pp=drop, drop_ci95_pp=[drop - 0.3, drop + 0.3],
                                 weight_bytes=900 + 25 * n, predicted_weight_bytes=900 + 25 * n,
                                 tflite_bytes=2000 + 10 * n, config_hash=f"h{n}-{seed}")
            records.write_atomic(records.case_path(folder, record["case_id"]), record)
            out.append(record)
    return out


class StubConfig:
    def __init__(self, **values):
        parser = pytest.Parser()
        pytest_options.addoption(parser)
        self.values = {opt.dest: opt.default for opt in parser.getgroup(pytest_options.GROUP).options}
        self.values.update(values)
        self.option, self.args = SimpleNamespace(keyword="", markexpr=""), []

    def getoption(self, name):
        return self.values[name]


def test_merge_and_a_session_end_give_the_same_verdicts_and_problems(tmp_path, capsys, monkeypatch):
    from harness.session import QatSession

    monkeypatch.setenv("QATBENCH_RESCUE", str(tmp_path / "rescue"))
    saved = tmp_path / "baseline.json"
    baseline.save_baseline(write_run(tmp_path / "base"), saved, tier="smoke", machine=records.machine())
    session = QatSession(StubConfig(qat_results=tmp_path / "results", qat_run_id="single", qat_baseline=str(saved),
                                    qat_cache=tmp_path / "cache"))
    single, sharded = session.run_dir, tmp_path / "sharded"
    write_run(single, rise_pp=3.0)  # what the session's cases wrote
    shutil.copytree(single, sharded)  # and what shards wrote
    assert session.finish() is not None
    rc = main(["merge", str(sharded), "--baseline", str(saved)])
    printed = [line.removeprefix("problem: ") for line in capsys.readouterr().err.splitlines()
               if line.startswith("problem: ")]

    assert rc == 1 and printed == session.end.problems, printed
    assert any("regressed" in p for p in printed), printed  # the gate
    assert any(p.startswith("target") for p in printed)  # the drop targets merge used to skip
    assert any("not decreasing" in p for p in printed)  # and the size checks
    lines = [json.loads(line) for line in (single / "records.jsonl").read_text().splitlines()]
    again = [json.loads(line) for line in (sharded / "records.jsonl").read_text().splitlines()]
    assert [r.get("baseline") for r in lines] == [r.get("baseline") for r in again]


def test_the_summary_reuses_the_reports_analysis(tmp_path, monkeypatch):
    """The terminal summary reads the written report's fits and comparisons: the same lines as
    analysing the records again, without the second analysis."""
    from harness.analysis import report
    from harness.session import QatSession

    monkeypatch.setenv("QATBENCH_RESCUE", str(tmp_path / "rescue"))
    session = QatSession(StubConfig(qat_results=tmp_path / "results", qat_run_id="r", qat_cache=tmp_path / "cache"))
    write_run(session.run_dir)
    session.finish()
    assert session.end.report is not None
    calls = []
    monkeypatch.setattr(report, "analyse", lambda *a: calls.append(a) or (_ for _ in ()).throw(AssertionError))
    reused = session.summary_lines()
    monkeypatch.undo()
    again = report.terminal_summary(session.end.merged, report_path=session.end.report_path)
    assert not calls and [line for line in reused if line in again] == again
