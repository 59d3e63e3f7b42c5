"""Bad suite options fail at parse time with one line naming the allowed values."""

import subprocess
import sys
from pathlib import Path

import pytest

from harness import options
from harness.design import grid
from harness.design.config import RunOptions

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value", ["0", "1", "9", "x", "8,,4"])
def test_bad_bits(value):
    with pytest.raises(options.Bad, match=r"bits must be"):
        options.parse_bits(value)


@pytest.mark.parametrize("parse,value,expected", [
    (options.parse_tier, "huge", "choose from: smoke, full"),
    (options.parse_strategy, "horovod", "choose from: default, mirrored, multiworker"),
    (options.parse_orders, "last,middle", "choose from: last, first, single, type, sensitivity"),
    (options.parse_workers, "0", r"workers must be in 1\.\."),
    (options.parse_workers, "two", r"workers must be an integer in 1\.\."),
    (options.parse_budget, "-1", "budget must be a finite number >= 0"),
    (options.parse_tolerance, "lots", "tolerance must be a finite number >= 0"),
    (options.parse_seeds, "-3", r"seeds must be in 0\.\.4294967295"),
    (options.parse_existing_file, "/nonexistent/baseline.json", "does not exist"),
])
def test_bad_values_name_the_choices(parse, value, expected):
    with pytest.raises(options.Bad, match=expected):
        parse(value)


def test_good_values_parse():
    assert options.parse_bits("8,4,8") == (8, 4)
    assert options.parse_orders("last,first") == ("last", "first")
    assert options.parse_budget("1.5") == 1.5


def test_unwritable_results_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(options.Bad, match="not writable"):
        options.parse_results_dir(str(tmp_path / "file" / "run"))


def test_results_path_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(options.Bad, match="not a directory"):
        options.parse_results_dir(str(tmp_path / "f"))


def run_pytest(*args):
    return subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "--collect-only", "-q", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_bad_option_is_a_usage_error_with_one_line():
    done = run_pytest("--qat-bits", "9")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].endswith("error: argument --qat-bits: bits must be in 2..8, got 9")
    assert "Traceback" not in done.stderr


def test_case_ids_read_like_the_design():
    done = run_pytest("-k", "mlp")
    ids = [line.split("[")[1].rstrip("]") for line in done.stdout.splitlines() if "[" in line]
    assert ids[:4] == ["mlp-last0-w8a8", "mlp-last0-w8a8-s1", "mlp-last0-w8a8-s2", "mlp-last0-w4a8"]
    assert len([i for i in ids if i.startswith("mlp-")]) == 4 * 2 * 3  # N 0, 1, 3, 5; W8 and W4; 3 seeds


def test_the_grid_follows_the_options():
    cases = grid.cases_for(RunOptions(tier="smoke", bits=(8,), orders=("first", "type"), seeds=(0, 1)))
    ids = [c.id for c in cases if c.model == "mlp"]
    assert "mlp-first3-w8a8-s1" in ids and "mlp-type-dense-w8a8" in ids
    assert "mlp-first5-w8a8-s1" not in ids  # the same model as mlp-last5: not measured twice
    assert len(ids) == (2 + 1) * 2  # first 1 and 3 (N 0 and 5 are the last-order models), type dense
    ptq = grid.cases_for(RunOptions(tier="smoke", bits=(8, 4), methods=("qat", "ptq")))
    ptq_ids = [c.id for c in ptq if c.model == "mlp" and c.quant.method == "ptq"]
    assert ptq_ids[:2] == ["mlp-last0-w8a8-ptq", "mlp-last0-w8a8-ptq-s1"] and len(ptq_ids) == 4 * 3


@pytest.mark.parametrize("fields,expected", [
    (dict(size_budget=1000), "--qat-size-budget needs --qat-budget"),
    (dict(named_run_id="a", resume="b", run_id="b"), "name different runs"),
    (dict(strict_baseline=True), "--qat-strict-baseline needs --qat-baseline"),
    (dict(drop_tolerance=0.5), "--qat-drop-tolerance needs --qat-baseline"),
    (dict(workers=2), "needs --qat-strategy mirrored or multiworker"),
])
def test_options_that_conflict_are_refused_in_one_line(fields, expected):
    with pytest.raises(options.Bad, match=expected):
        options.check_options(RunOptions(**fields))


def test_options_that_agree_pass():
    options.check_options(RunOptions(baseline="b.json", strict_baseline=True, drop_tolerance=0.5, budget=1.0,
                                     size_budget=1000, named_run_id="a", resume="a", run_id="a"))


def test_every_qat_option_reaches_run_options():
    """No option is read ad hoc: each --qat-* option has a RunOptions field (run_id/resume/named_run_id
    share the folder options)."""
    from dataclasses import fields

    from harness import pytest_options

    parser = pytest.Parser()
    pytest_options.addoption(parser)
    dests = {opt.dest for opt in parser.getgroup(pytest_options.GROUP).options}
    names = {f.name for f in fields(RunOptions)}
    assert {d.removeprefix("qat_") for d in dests} - {"run_id"} - set(pytest_options.PYTEST_LAYER) <= names
    assert set(pytest_options.PYTEST_LAYER) <= {d.removeprefix("qat_") for d in dests}
