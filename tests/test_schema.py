"""harness.results.schema: the record schema declared once, and everything that must agree with it."""

import json
import re
from pathlib import Path

from harness.results import records, schema

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_version_and_migration_come_from_the_schema():
    assert records.SCHEMA_VERSION == schema.VERSION == 7
    assert set(records.ADDED_IN[2]) == {"n_test", "discordant", "paired_drop_pp", "drop_ci95_pp", "mcnemar_p",
                                        "drop_within_noise", "predictions_file", "predictions_sha256", "unit_table"}
    assert "tflite_runtime" in records.ADDED_IN[3]
    assert records.ADDED_IN[4] == ("mixed_plan",)
    assert records.ADDED_IN[5] == ("train_step",)
    assert {"tflite_sha256", "tflite_file", "tflite_error"} <= set(records.ADDED_IN[6])
    assert {f.name for f in schema.GROUPS["latency"]} <= set(records.ADDED_IN[6])
    assert "pretrain_recipe" in records.ADDED_IN[7]


def test_a_version_five_record_has_no_latency(make_record):
    old = {k: v for k, v in make_record().items() if k not in records.ADDED_IN[6] + records.ADDED_IN[7]}
    old["schema_version"] = 5
    new = records.upgrade(old)
    assert new["migrated_from"] == 5 and new["latency_ratio"] is None and new["quantize_ops"] is None
    assert schema.problems(new) == []


def test_each_field_is_declared_once_in_one_group():
    names = [f.name for group in schema.GROUPS.values() for f in group]
    assert len(names) == len(set(names))
    assert schema.group_of("quant_accuracy") == "accuracy" and schema.group_of("devices") == "case"


def test_summary_columns_are_schema_fields():
    assert set(records.SUMMARY_COLUMNS) <= set(schema.FIELDS)


def test_a_version_one_record_is_migrated_to_the_declared_shape(make_record):
    old = {k: v for k, v in make_record().items() if k not in records.ADDED_IN[2]}
    old["schema_version"] = 1
    new = records.upgrade(old)
    assert new["migrated_from"] == 1 and all(new[name] is None for name in records.ADDED_IN[2])
    assert schema.problems(new) == []


def test_a_version_two_record_is_migrated_with_an_unknown_runtime(make_record):
    old = {k: v for k, v in make_record(tflite_runtime="ai-edge-litert 2.3.0").items() if k != "tflite_runtime"}
    old["schema_version"] = 2
    new = records.upgrade(old)
    assert new["migrated_from"] == 2 and new["tflite_runtime"] is None  # schema 2 did not say which runtime
    assert new["schema_version"] == schema.VERSION and schema.problems(new) == []


def test_a_version_four_record_does_not_claim_how_its_steps_ran(make_record):
    old = {k: v for k, v in make_record().items() if k != "train_step"}
    old["schema_version"] = 4
    new = records.upgrade(old)
    assert new["migrated_from"] == 4 and new["train_step"] is None  # schema 4 ran every step as TF ops, unsaid
    assert schema.problems(new) == []


def test_problems_name_unknown_keys_and_wrong_types(make_record):
    record = {**make_record(), "n": "five", "mystery": 1, "drop_within_noise": 1, "per_channel": True}
    found = schema.problems(record)
    assert len(found) == 3
    assert any(p.startswith("n: str") for p in found) and any(p.startswith("mystery:") for p in found)
    assert any(p.startswith("drop_within_noise: int") for p in found)  # an int is not a bool


def documented_fields() -> set:
    text = (DOCS / "results.md").read_text() + (DOCS / "distributed.md").read_text()
    return set(re.findall(r"`([a-z][a-z0-9_]*)`", text))


def test_every_field_is_documented():
    missing = sorted(set(schema.FIELDS) - documented_fields())
    assert missing == [], f"document these record fields in docs/results.md or docs/distributed.md: {missing}"


def test_the_field_table_names_only_schema_fields():
    text = (DOCS / "results.md").read_text()
    table = text[text.index("### Record fields"):text.index("## Thresholds")]
    first_cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    named = {name for cell in first_cells for name in re.findall(r"`([a-z][a-z0-9_.]*)`", cell)}
    unknown = sorted(n for n in named if n.split(".")[0] not in schema.FIELDS)
    assert unknown == []


def test_records_of_the_committed_reference_run_fit_the_schema():
    folder = Path(__file__).resolve().parents[1] / "results" / "reference" / "cases"
    files = sorted(folder.glob("*.json"))
    assert files, "results/reference is committed with the repository"
    bad = {f.name: schema.problems(json.loads(f.read_text())) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}
