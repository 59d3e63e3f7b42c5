"""harness.analysis.report: report.md, PNG plots and the terminal summary from synthetic records."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from harness.analysis import report

PNG = b"\x89PNG\r\n\x1a\n"
UNITS = 8


def synthetic(model="m", ns=(1, 2, 3, 4, 6, 8), bits=(8, 4), orders=("last", "first"), methods=("qat",), seeds=(0, 1)):
    rng = np.random.default_rng(0)
    out = []
    for order in orders:
        for b in bits:
            for method in methods:
                for n in ns:
                    for seed in seeds:
                        slope = (0.1 if order == "last" else 0.4) * (8 / b) * (2 if method == "ptq" else 1)
                        drop = slope * n + float(rng.normal(0, 0.02))
                        weight = 4000 - (4 - b / 2) * 100 * n
                        out.append(dict(
                            case_id=f"{model}-{order}{n}-w{b}a8" + ("-ptq" if method == "ptq" else "") + (f"-s{seed}" if seed else ""),
                            status="passed", error=None, model=model, order=order, n=n, kind=None, weight_bits=b,
                            method=method, tier="smoke", seed=seed, units_total=UNITS, param_fraction=n / UNITS,
                            control_accuracy=0.9, quant_accuracy=0.9 - drop / 100, accuracy_drop_pp=drop,
                            tflite_bytes=weight + 900, weight_bytes=weight, predicted_weight_bytes=weight,
                            size_error_rel=0.0, config_hash="h"))
    return out


def broken(case_id, status, error):
    return dict(case_id=case_id, status=status, error=error, model="m", order="last", n=5, weight_bits=8,
                method="qat", seed=0, accuracy_drop_pp=None, tflite_bytes=None)


def test_writes_report_and_plots(tmp_path):
    records = synthetic(methods=("qat", "ptq")) + synthetic(model="other", bits=(8,), orders=("last",))
    records += [broken("m-last5-w8a8", "error", "RuntimeError: converter exploded\nTraceback line 2"),
                dict(synthetic()[0], case_id="m-last1-w8a8-s9", status="failed", error="drop 9 pp > 1.5 pp")]
    result = report.write_report(records, tmp_path, budget_pp=1.0, problems=["x.json: unreadable"])
    text = (tmp_path / "report.md").read_text()
    assert result.path == tmp_path / "report.md"
    for heading in ("## m", "## other", "### Accuracy-drop formulas", "## Last vs first layers", "## Plan: accuracy budget 1 pp",
                    "## Cases that did not pass", "## Unreadable records"):
        assert heading in text, heading
    assert "drop_pp ≈" in text and "seed-level 95% CI" in text and "leave-one-seed-out RMSE" in text
    assert "`m-last5-w8a8` — error: RuntimeError: converter exploded" in text and "Traceback line 2" not in text
    assert "`m-last1-w8a8-s9` — failed: drop 9 pp > 1.5 pp" in text
    assert "quantizing the last N costs" in text and "2 seeds, matched on N" in text
    assert "too few pairs" in text and "final layers cost less" not in text  # 2 seeds cannot reach p < 0.05
    names = {p.name for p in result.plots}
    assert {"drop-m-qat.png", "drop-m-ptq.png", "size-m.png", "methods-m.png", "drop-other-qat.png", "size-other.png"} <= names
    assert "methods-other.png" not in names  # only one method there
    for path in result.plots:
        assert path.read_bytes().startswith(PNG) and f"(plots/{path.name})" in text
    assert any(p.n is not None for p in result.plans)


def test_zero_passing_records(tmp_path):
    records = [broken("m-last5-w8a8", "error", "boom"), broken("m-last6-w8a8", "timeout", None)]
    result = report.write_report(records, tmp_path, budget_pp=1.0)
    text = result.path.read_text()
    assert "No measured records" in text and "2 cases: 1 error, 1 timeout" in text
    assert "`m-last5-w8a8` — error: boom" in text and "`m-last6-w8a8` — timeout: (no error message)" in text
    assert result.plots == () and result.fits == ()
    assert report.terminal_summary(records)[0] == "qatbench: 2 cases: 1 error, 1 timeout"


def test_empty_record_list(tmp_path):
    result = report.write_report([], tmp_path)
    assert "0 cases: none" in result.path.read_text()


def test_too_few_n_single_model_single_bits(tmp_path):
    records = synthetic(ns=(2, 4), bits=(8,), orders=("last",))
    result = report.write_report(records, tmp_path)
    text = result.path.read_text()
    assert "not enough N to fit" in text and "drop_pp ≈" not in text
    assert (tmp_path / "plots" / "drop-m-qat.png").read_bytes().startswith(PNG)
    assert "no (model, bits, method) with both 'last' and 'first' records" in text


def test_enough_seeds_give_a_verdict_in_the_report(tmp_path):
    text = report.write_report(synthetic(bits=(8,), seeds=range(8)), tmp_path).path.read_text()
    assert "- m w8 qat: quantizing the last N costs 0.9" in text
    assert "(per-seed mean, 8 seeds, matched on N; sign-flip p = 0.00781, Holm-adjusted 0.00781): final layers cost less" in text
    assert "Holm over 1 test(s) of the pre-registered family" in text and "descriptive): not tested" in text
    assert "matched on the share of weights quantized" in text


def test_table_shows_paired_intervals_and_seed_means(tmp_path):
    records = synthetic(ns=(1, 2, 3), bits=(8,), orders=("last",), seeds=(0, 1, 2))
    for r in records:
        r["drop_ci95_pp"] = [r["accuracy_drop_pp"] - 0.5, r["accuracy_drop_pp"] + 0.5]
    single = dict(records[0], n=6, seed=0, accuracy_drop_pp=2.0, drop_ci95_pp=[1.2, 2.8], case_id="x")
    lines = report.results_table(records + [single])
    row1 = next(line for line in lines if line.startswith("| last | 8 | qat | 1 |"))
    drops = sorted(r["accuracy_drop_pp"] for r in records if r["n"] == 1)
    assert f"s0: {records[0]['accuracy_drop_pp']:.2f} [{records[0]['accuracy_drop_pp'] - 0.5:.2f}, " in row1
    assert row1.count(" ~") == 3  # each run's interval holds 0: inside the noise
    mean, low, high = report.seedstats.mean_interval(drops)
    assert f"{mean:.2f} [{low:.2f}, {high:.2f}] (3 seeds)" in row1
    row6 = next(line for line in lines if line.startswith("| last | 8 | qat | 6 |"))
    assert "2.00 (1 seed)" in row6 and "s0: 2.00 [1.20, 2.80] |" in row6


def test_type_rows_keep_each_kind_apart():
    kinds = ("attention", "ffn", "dense")
    records = [dict(r, order="type", n=0, kind=kind, accuracy_drop_pp=float(i), case_id=f"m-type-{kind}-s{r['seed']}")
               for i, kind in enumerate(kinds) for r in synthetic(ns=(1,), bits=(8,), orders=("last",), seeds=(0, 1))]
    lines = report.results_table(records)
    for i, kind in enumerate(kinds):
        row = next(line for line in lines if line.startswith(f"| type | 8 | qat | {kind} | 2 |"))
        assert f"s0: {i:.2f}" in row and row.count("s0:") == 1  # one kind's seeds only, not all three pooled


def test_type_plots_put_each_kind_at_its_own_place(tmp_path):
    kinds = ("attention", "ffn", "dense")
    records = [dict(r, order="type", n=0, kind=kind, accuracy_drop_pp=float(i), case_id=f"m-type-{kind}-s{r['seed']}")
               for i, kind in enumerate(kinds) for r in synthetic(ns=(1,), bits=(8,), orders=("last",), seeds=(0, 1))]
    xs, ys = report._means(records, "accuracy_drop_pp")
    assert list(xs) == [0, 1, 2] and list(ys) == [0.0, 2.0, 1.0]  # attention, dense, ffn in sorted order
    result = report.write_report(records, tmp_path)
    assert (tmp_path / "plots" / "drop-m-qat.png").read_bytes().startswith(PNG) and result.plots


def test_fit_lines_show_refusals_and_bound_flags(tmp_path):
    steep = [dict(r, accuracy_drop_pp=0.001 * r["n"] ** 6) for r in synthetic(bits=(8,), orders=("last",))]
    text = report.write_report(steep, tmp_path).path.read_text()
    assert "at its upper bound 3" in text
    few = synthetic(ns=(1, 2, 3), bits=(8,), orders=("last",), seeds=(0,))
    text = report.write_report(few, tmp_path / "few").path.read_text()
    assert "not fitted: affine: 3 N means <= 2 parameters + 1" in text and "AICc undefined" in text


def test_terminal_summary_is_compact(tmp_path):
    lines = report.terminal_summary(synthetic(), budget_pp=1.0, report_path=tmp_path / "report.md")
    assert lines[0] == f"qatbench: {len(synthetic())} cases: {len(synthetic())} passed"
    assert any("m last w8 qat: `drop_pp ≈" in line for line in lines)
    assert any(line.startswith("  last vs first: m w8 qat: quantizing the last N costs") and "too few pairs" in line
               for line in lines)
    assert any(line.startswith("  plan m w8 qat") for line in lines)
    assert lines[-1].endswith("report.md") and all(isinstance(line, str) and "\n" not in line for line in lines)
    assert len(lines) < 20


def test_pure_modules_do_not_import_tensorflow():
    code = ("import sys, harness.analysis.drop_fit, harness.analysis.drop_forms, harness.results.seedstats, harness.analysis.plan, harness.analysis.order_test, harness.results.baseline, "
            "harness.analysis.report, harness.__main__; "
            "sys.exit('tensorflow' in sys.modules)")
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


def test_a_failed_case_lists_the_thresholds_it_broke(tmp_path):
    failed = {**broken("m-last6-w8a8", "failed", None),
              "violations": ["audit: 7 quantized kernels in the .tflite, 6 selected", "size: predicted 10 B vs 9 B"]}
    text = report.write_report([failed], tmp_path).path.read_text()
    assert "`m-last6-w8a8` — failed: audit: 7 quantized kernels in the .tflite, 6 selected; size: predicted" in text


def test_a_model_with_a_small_test_set_states_its_resolution(make_record):
    from harness.analysis.report import resolution_lines

    small = [make_record(model="mlp", n_test=1000), make_record(model="cnn", n_test=10000)]
    (line, _) = resolution_lines(small)
    assert "`mlp` 1,000 test examples (0.1 pp each)" in line and "cnn" not in line
    assert resolution_lines([make_record(model="cnn", n_test=10000)]) == []


def test_two_small_test_sets_each_state_their_own_step(make_record):
    from harness.analysis.report import resolution_lines

    (line, _) = resolution_lines([make_record(model="mlp", n_test=1000), make_record(model="minilm2", n_test=444)])
    assert "`minilm2` 444 test examples (0.23 pp each); `mlp` 1,000 test examples (0.1 pp each)" in line
    assert "each one's verdicts cannot resolve an effect below its step" in line
