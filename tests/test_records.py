import json

from hypothesis import given, settings, strategies as st

from harness.results import records, rescue


def make(case_id, created="2026-01-01T00:00:00+00:00", **fields):
    record = records.base_record(case_id, "h" * 16, {"status": "passed", **fields}, {"machine": "test"})
    record["created"] = created
    return record


def test_write_atomic_leaves_no_temp_file_and_round_trips(tmp_path):
    path = records.case_path(tmp_path, "mlp-last1-w8a8")
    records.write_atomic(path, make("mlp-last1-w8a8", n=1))
    assert json.loads(path.read_text())["n"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["mlp-last1-w8a8.json"]


def test_records_are_self_describing():
    record = make("x")
    assert record["schema_version"] == records.SCHEMA_VERSION
    assert set(records.SUMMARY_COLUMNS) <= set(record)
    assert record["config_hash"] and record["env"] and record["created"]


def test_merge_ignores_temp_files_and_reports_corrupt_ones(tmp_path):
    cases = tmp_path / records.CASES_DIR
    records.write_atomic(cases / "a.json", make("a"))
    (cases / ".b.json.123.tmp").write_text('{"half": ')  # a writer killed mid-write
    (cases / "c.json").write_text("{not json")
    merged, problems = rescue.merge_run(tmp_path)
    assert [r["case_id"] for r in merged] == ["a"]
    assert len(problems) == 1 and "c.json" in problems[0]
    assert len(records.load_jsonl(tmp_path / "records.jsonl")) == 1
    assert (tmp_path / "summary.csv").read_text().splitlines()[0].startswith("case_id,status")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=12))
def test_merge_keeps_exactly_one_record_per_case_the_newest(tmp_path_factory, ids):
    run = tmp_path_factory.mktemp("run")
    for i, case_id in enumerate(ids):
        records.write_atomic(run / records.CASES_DIR / f"{case_id}-{i}.json",
                             make(case_id, created=f"2026-01-01T00:00:{i:02d}+00:00", order_written=i))
    merged, _ = rescue.merge_run(run)
    assert sorted(r["case_id"] for r in merged) == sorted(set(ids))
    newest = {case_id: i for i, case_id in enumerate(ids)}
    assert all(r["order_written"] == newest[r["case_id"]] for r in merged)


def test_a_record_from_another_schema_is_not_merged(tmp_path):
    record = make("old")
    record["schema_version"] = 0
    records.write_atomic(tmp_path / records.CASES_DIR / "old.json", record)
    merged, problems = rescue.merge_run(tmp_path)
    assert merged == [] and "schema" in problems[0]


def test_git_commit_is_none_outside_a_repository(tmp_path):
    assert records.git_commit(str(tmp_path)) is None
