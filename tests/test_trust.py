"""Trust boundaries (issue 29): names read from records, rescue files, options and the environment
never make qatbench write or delete outside the folder a file belongs to; rescue copies are bound
to their run and never replace a measurement; a model file runs no code unless the user says so."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.results import records, rescue

GRID_IDS = ("mlp-last3-w8a8", "cnn-first1-w8a8-ptq", "mlp-mixed-b150k", "my_model-single2-w4a8-s3", "mlp-type-dense")
BAD_IDS = ("../../ESCAPED", "../../newdir/sub/X", "../../../victim", "..", ".", "a/b", "a\\b", "a\0b", "",
           ".hidden", "a.b", "-x", "x" * 201, "a b", "a\nb", 5, None)


def record(case_id, **fields):
    return {"schema_version": records.SCHEMA_VERSION, "case_id": case_id, "status": "passed",
            "created": "2026-01-01T00:00:00+00:00", "accuracy_drop_pp": 0.3, **fields}


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv(rescue.RESCUE_ENV, str(tmp_path / "rescue"))
    folder = tmp_path / "results" / "run1"
    (folder / records.CASES_DIR).mkdir(parents=True)
    return folder


def plant(run_dir: Path, name: str, content: dict) -> Path:
    """A file an adversary put into the (shared, predictable) rescue folder."""
    folder = rescue.rescue_dir(run_dir) / records.CASES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(content))
    return folder / name


def files_under(root: Path) -> set:
    return {p.relative_to(root) for p in root.rglob("*")}


# -- every source of a name is checked in one place --------------------------------------------------
@pytest.mark.parametrize("case_id", GRID_IDS)
def test_the_grids_case_ids_are_plain(tmp_path, case_id):
    assert records.case_path(tmp_path, case_id) == tmp_path / records.CASES_DIR / f"{case_id}.json"


@pytest.mark.parametrize("case_id", BAD_IDS)
def test_a_case_id_that_could_be_a_path_is_refused_in_one_line(tmp_path, case_id):
    with pytest.raises(ValueError) as caught:
        records.case_path(tmp_path, case_id)
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError):
        records.write_predictions(tmp_path, case_id, {"y_true": [0], "control": [0], "quant": [0]})


def test_the_grid_makes_only_plain_case_ids():
    from harness.design import grid
    from harness.design.config import RunOptions

    ids = [case.id for tier in ("smoke", "full", "reference") for case in grid.cases_for(RunOptions(tier=tier))]
    assert ids and all(records.CASE_ID.fullmatch(i) for i in ids)


def test_a_planted_link_in_the_cases_folder_is_not_written_through(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text("keep me")
    (tmp_path / "run" / records.CASES_DIR).mkdir(parents=True)
    (tmp_path / "run" / records.CASES_DIR / "mlp-last1-w8a8.json").symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        records.case_path(tmp_path / "run", "mlp-last1-w8a8")
    assert outside.read_text() == "keep me"


def test_a_record_with_a_path_for_a_case_id_is_skipped_by_every_reader(run):
    (run / records.CASES_DIR / "evil.json").write_text(json.dumps(record("../../ESCAPED")))
    (run / "records.jsonl").write_text(json.dumps(record("../x")) + "\n")
    merged, problems = rescue.merge_run(run)
    assert merged == [] and len(problems) == 1 and "evil.json" in problems[0] and "not a plain case id" in problems[0]
    notes = []
    assert records.load_jsonl(run / "records.jsonl", notes) == [] or notes


def test_a_record_names_no_predictions_file_but_its_own(run):
    bad = record("mlp-last1-w8a8", predictions_file="../../../etc/passwd", predictions_sha256="0")
    with pytest.raises(records.RecordError, match="is not mlp-last1-w8a8.predictions.npz"):
        records.read_predictions(run, bad)


def test_a_run_id_from_the_options_cannot_leave_the_results_folder():
    from harness import options

    for value in ("../x", "a/b", "..", ".x", "a\0b", ""):
        with pytest.raises(options.Bad):
            options.parse_run_id(value)


# -- the rescue folder: bound to its run ---------------------------------------------------------------
def test_planted_rescue_records_with_path_ids_write_and_delete_nothing_outside(run, tmp_path):
    victim = tmp_path / "results" / "victim.json"
    victim.write_text("{}")
    key = rescue.run_key(run, create=True)
    for i, bad in enumerate(("../../ESCAPED", "../../newdir/sub/X", "../../../victim")):
        plant(run, f"p{i}.{key}.json", record(bad))
        plant(run, f"{bad.replace('/', '_')}.json", record(bad))
    before = files_under(tmp_path)
    merged, problems = rescue.merge_run(run)
    after = files_under(tmp_path)
    assert merged == [] and victim.read_text() == "{}"
    assert after - before == {Path("results/run1/records.jsonl"), Path("results/run1/summary.csv")}
    assert len(problems) == 6 and all("\n" not in p and "rescue file" in p for p in problems)


def test_a_planted_record_without_the_runs_key_never_replaces_a_measurement(run):
    records.write_atomic(records.case_path(run, "mlp-last3-w8a8"), record("mlp-last3-w8a8"))
    rescue.run_key(run, create=True)
    later = record("mlp-last3-w8a8", created="2027-01-01T00:00:00+00:00", accuracy_drop_pp=-7.0)
    planted = [plant(run, "mlp-last3-w8a8.json", later), plant(run, "mlp-last3-w8a8.unbound.json", later),
               plant(run, f"mlp-last3-w8a8.{'0' * 32}.json", later)]
    for _ in range(2):  # the same at every merge, and nothing is applied
        merged, problems = rescue.merge_run(run)
        assert [r["accuracy_drop_pp"] for r in merged] == [0.3]
        assert len(problems) == 3 and all("not bound to this run" in p for p in problems)
        assert all(str(p) in " ".join(problems) for p in planted) and all(p.exists() for p in planted)


def test_a_bound_copy_never_replaces_a_case_the_run_folder_holds(run):
    records.write_atomic(records.case_path(run, "mlp-last3-w8a8"), record("mlp-last3-w8a8"))
    key = rescue.run_key(run, create=True)
    copy = plant(run, f"mlp-last3-w8a8.{key}.json", record("mlp-last3-w8a8", created="2027-01-01T00:00:00+00:00",
                                                           accuracy_drop_pp=-7.0))
    merged, problems = rescue.merge_run(run)
    assert [r["accuracy_drop_pp"] for r in merged] == [0.3] and copy.exists()
    assert len(problems) == 1 and str(copy) in problems[0] and "never replaced" in problems[0]


def test_a_bound_copy_whose_name_is_not_its_case_id_is_refused(run):
    key = rescue.run_key(run, create=True)
    copy = plant(run, f"mlp-last1-w8a8.{key}.json", record("mlp-last2-w8a8"))
    merged, problems = rescue.merge_run(run)
    assert merged == [] and copy.exists() and not records.case_path(run, "mlp-last2-w8a8").exists()
    assert len(problems) == 1 and "not the one in its name" in problems[0]


def test_a_rescued_record_is_applied_where_the_case_is_missing_then_its_copy_deleted(run):
    copy = rescue.save_record(run, record("mlp-last1-w8a8"))
    assert copy is not None and copy.name == f"mlp-last1-w8a8.{rescue.run_key(run)}.json"
    assert (run / rescue.KEY_FILE).is_file() and rescue.pending(run)
    merged, problems = rescue.merge_run(run)
    assert [r["case_id"] for r in merged] == ["mlp-last1-w8a8"] and problems == []
    assert records.case_path(run, "mlp-last1-w8a8").is_file() and not copy.exists()
    assert not rescue.rescue_dir(run).exists()


def test_the_key_is_the_first_writers_and_a_planted_key_link_is_not_followed(run, tmp_path):
    first = rescue.run_key(run, create=True)
    assert first and rescue.run_key(run, create=True) == first == rescue.run_key(run)
    other = tmp_path / "other"
    other.mkdir()
    (tmp_path / "key").write_text("1" * 32)
    (other / rescue.KEY_FILE).symlink_to(tmp_path / "key")
    assert rescue.run_key(other, create=True) is None


def test_a_rescue_folder_that_is_a_link_is_not_used(run, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rescue.rescue_dir(run).parent.mkdir(parents=True)
    rescue.rescue_dir(run).symlink_to(elsewhere)
    assert rescue.save_record(run, record("mlp-last1-w8a8")) is None
    assert rescue.save_text(run, "records.jsonl", "x") is None
    assert list(elsewhere.iterdir()) == []


def test_kept_in_is_said_only_for_copies_that_are_on_disk(run):
    (run / records.CASES_DIR).rmdir()
    (run / records.CASES_DIR).write_text("not a folder")  # the run folder refuses records
    rescue.rescue_dir(run).parent.mkdir(parents=True)
    rescue.rescue_dir(run).write_text("not a folder")  # and so does the rescue folder
    merged, problems = rescue.merge_run(run, [record("mlp-last1-w8a8")])
    assert [r["case_id"] for r in merged] == ["mlp-last1-w8a8"]
    assert not any("kept in" in p for p in problems)
    assert any("could be written neither" in p and "mlp-last1-w8a8" in p for p in problems)
    rescue.rescue_dir(run).unlink()
    merged, problems = rescue.merge_run(run, [record("mlp-last1-w8a8")])
    kept = [p for p in problems if "kept in" in p]
    assert kept and rescue.rescue_file(run, "mlp-last1-w8a8", rescue.run_key(run)).is_file()


def test_save_text_stays_in_the_rescue_folder(run):
    for name in ("../escaped.jsonl", "a/b", "..", ""):
        assert rescue.save_text(run, name, "x") is None
    assert not (rescue.rescue_dir(run).parent / "escaped.jsonl").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a file owned by another user")
def test_a_rescue_folder_of_another_user_is_not_used(run):
    rescue.rescue_dir(run).mkdir(parents=True)
    os.chown(rescue.rescue_dir(run), 12345, 12345)
    assert rescue.save_record(run, record("mlp-last1-w8a8")) is None


# -- a model file runs no code unless the user trusts it ----------------------------------------------
def marker_model(marker: Path):
    """A model whose Lambda creates ``marker`` whenever the layer is called (as loading a file does)."""
    from harness.backend import keras

    touch = eval(f"lambda x: (open({str(marker)!r}, 'a').close(), x)[1]")  # the path is in the bytecode
    inp = keras.layers.Input((4,))
    return keras.Model(inp, keras.layers.Dense(2)(keras.layers.Lambda(touch)(inp)))


@pytest.mark.tf
@pytest.mark.parametrize("suffix", [".h5", "_savedmodel", ".keras"])
def test_a_lambda_in_any_model_format_runs_only_with_the_trust_option(tmp_path, suffix):
    from harness.external import model_file

    marker = tmp_path / "ran"
    path = tmp_path / f"lambda{suffix}"
    marker_model(marker).save(path, **({"save_format": "tf"} if suffix == "_savedmodel" else {}))
    marker.unlink()  # building the model ran it once
    with pytest.raises(model_file.BadModel) as caught:
        model_file.read(path)
    message = str(caught.value)
    assert "\n" not in message and "Lambda" in message and "--qat-trust-model-file" in message
    assert not marker.exists()
    if suffix == ".keras":  # tf_keras's own safe_mode also needs the option: same rule for the format
        return
    assert len(model_file.read(path, trust=True).layers) == 3 and marker.exists()


@pytest.mark.tf
def test_safe_mode_stops_a_lambda_the_config_scan_did_not_see(tmp_path, monkeypatch):
    from harness.external import model_file

    marker = tmp_path / "ran"
    marker_model(marker).save(tmp_path / "m.h5")
    marker.unlink()
    monkeypatch.setattr(model_file, "_configs", lambda path: [])  # as if the config could not be read
    with pytest.raises(model_file.BadModel, match="Lambda"):
        model_file.read(tmp_path / "m.h5")
    assert not marker.exists()


USER_MODULE = """
import os
from os import getcwd as imported_function


class TrustProbeClass:  # a name no other test's model uses: custom_objects registers it for the process
    pass


def needs_arguments(path):
    open(path, "w").close()


def not_classes():
    return {"x": 1}


NUMBER = 3
"""


@pytest.mark.tf
@pytest.mark.parametrize("target, says", [
    ("os:system", "standard-library module"), ("subprocess:getoutput", "standard-library module"),
    ("builtins:print", "standard-library module"), ("userlayers_t29:imported_function", "it was not called"),
    ("userlayers_t29:needs_arguments", "it was not called"), ("userlayers_t29:NUMBER", "it was not called"),
    ("userlayers_t29:not_classes", "'x' is not a class name mapped to a class"),
    ("userlayers_t29:os", "it was not called"),
])
def test_custom_objects_call_nothing_but_a_function_of_the_named_module(tmp_path, monkeypatch, target, says):
    from harness.external import model_file

    (tmp_path / "userlayers_t29.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(model_file.BadModel) as caught:
        model_file.custom_objects(target)
    assert str(caught.value).startswith(f"--qat-custom-objects {target}: ") and says in str(caught.value)
    assert "\n" not in str(caught.value) and not list(tmp_path.glob("path*"))
    assert model_file.custom_objects("userlayers_t29:TrustProbeClass")["TrustProbeClass"].__name__ == "TrustProbeClass"


def test_the_trust_option_needs_a_model_file():
    from harness import options
    from harness.design.config import RunOptions

    with pytest.raises(options.Bad, match="--qat-trust-model-file needs --qat-model-file"):
        options.check_options(RunOptions(trust_model_file=True))


# -- every reader checks values against the one schema; outputs are regular files; reads are bounded --
@pytest.mark.parametrize("field, value, says", [
    ("drop_ci95_pp", ["a", "b"], "not an interval"), ("drop_ci95_pp", [1.0], "not an interval"),
    ("accuracy_drop_pp", float("nan"), "NaN"), ("accuracy_drop_pp", 1e308, "outside"),
    ("control_accuracy", 5.0, "outside"), ("phase_s", {"fit": float("inf")}, "NaN or infinite"),
    ("n_test", 0, "outside"), ("weight_bits", 9, "outside"), ("env", [1], "not dict"),
])
def test_one_bad_value_skips_that_record_in_merge_and_report_with_one_line(run, tmp_path, field, value, says):
    from harness.analysis import report

    records.write_atomic(records.case_path(run, "mlp-last1-w8a8"), record("mlp-last1-w8a8"))
    (run / records.CASES_DIR / "mlp-last2-w8a8.json").write_text(json.dumps(record("mlp-last2-w8a8", **{field: value})))
    merged, problems = rescue.merge_run(run)
    assert [r["case_id"] for r in merged] == ["mlp-last1-w8a8"]
    assert len(problems) == 1 and "mlp-last2-w8a8.json" in problems[0] and says in problems[0]
    assert report.write_report(merged, tmp_path / "rep", problems=problems).path.is_file()


def test_non_finite_numbers_are_refused_at_write_and_stored_as_null_in_a_rescue_copy(run):
    with pytest.raises(ValueError):
        records.write_atomic(run / "x.json", record("mlp-last1-w8a8", accuracy_drop_pp=float("nan")))
    assert rescue.plain(record("m", qat_final_loss=float("inf"), phase_s={"a": float("nan")}))["phase_s"] == {"a": None}


def test_outputs_are_never_links_or_special_files(tmp_path):
    from harness import options

    target = tmp_path / "target.json"
    target.write_text("keep")
    (tmp_path / "link.json").symlink_to(target)
    for value in (str(tmp_path / "link.json"), "/dev/null"):
        with pytest.raises(options.Bad, match="link or a special file"):
            options.parse_output_file(value)
        with pytest.raises(OSError, match="link or a special file"):
            records.write_text_atomic(Path(value), "x")
    assert target.read_text() == "keep" and Path("/dev/null").is_char_device()


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from harness.results import baseline

    big = tmp_path / "big.json"
    with open(big, "wb") as handle:
        handle.truncate(records.MAX_FILE_BYTES + 1)  # sparse: nothing is really written or read
    with pytest.raises(baseline.BaselineError, match="over the"):
        baseline.load_baseline(big)
    with pytest.raises(ValueError, match="over the"):
        records.read_case_record(big)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):  # returns at once: a FIFO is never opened
        records.read_case_record(fifo)


def good_baseline() -> dict:
    return {"format": "qatbench-baseline", "schema_version": 2, "created": "x", "tier": "smoke", "machine": {},
            "noise": {"mlp/w8": {"sd_pp": 0.5, "df": 2}},
            "entries": {"mlp-last1-w8a8": {"model": "mlp", "weight_bits": 8, "n": 1, "seeds": {"0": {
                "case_id": "mlp-last1-w8a8", "config_hash": "h", "drop_pp": 0.3, "control_accuracy": 0.9,
                "quant_accuracy": 0.89, "tflite_bytes": 1000, "n_test": 100}}}}}


@pytest.mark.parametrize("where, value", [
    (("noise", "mlp/w8", "df"), "abc"), (("noise", "mlp/w8", "df"), -1), (("schema_version",), True),
    (("entries", "mlp-last1-w8a8", "seeds", "0", "tflite_bytes"), -1),
    (("entries", "mlp-last1-w8a8", "seeds", "0", "tflite_bytes"), 0),
    (("entries", "mlp-last1-w8a8", "seeds", "0", "control_accuracy"), 5.0),
    (("entries", "mlp-last1-w8a8", "seeds", "0", "n_test"), "abc"),
    (("entries", "mlp-last1-w8a8", "weight_bits"), "abc"), (("entries", "mlp-last1-w8a8", "model"), [1]),
    (("entries", "mlp-last1-w8a8", "seeds", "x"), {"case_id": "a"}), (("noise",), [1]),
])
def test_every_baseline_value_is_checked_in_one_line(tmp_path, where, value):
    from harness.results import baseline

    data = good_baseline()
    assert baseline.load_baseline(_dump(tmp_path / "ok.json", data)).entries
    item = data
    for key in where[:-1]:
        item = item[key]
    item[where[-1]] = value
    with pytest.raises(baseline.BaselineError) as caught:
        baseline.load_baseline(_dump(tmp_path / "bad.json", data))
    assert "\n" not in str(caught.value)


def _dump(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def image_folder(root: Path, classes: dict) -> Path:
    from PIL import Image

    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (4, 4), (i * 40, 0, 0)).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("classes, says", [({"cat": 6}, "needs at least 2"), ({"cat": 6, "dog": 0}, "holds no image")])
def test_an_image_folder_with_one_class_or_an_empty_class_is_one_line(tmp_path, classes, says):
    from harness.external import data_files

    folder = image_folder(tmp_path / "imgs", classes)
    with pytest.raises(data_files.BadData, match=says) as caught:
        data_files.load(folder, (4, 4, 3), 2)
    assert "\n" not in str(caught.value)


def test_a_fifo_in_an_image_folder_is_refused_not_read(tmp_path):
    from harness.external import data_files

    folder = image_folder(tmp_path / "imgs", {"cat": 3, "dog": 3})
    os.mkfifo(folder / "dog" / "zz.png")
    with pytest.raises(data_files.BadData, match="zz.png: not a regular file"):
        data_files.load(folder, (4, 4, 3), 2)
