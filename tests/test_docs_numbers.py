"""docs/results.md's measured numbers are generated from the committed files (harness/analysis/docs_numbers.py):
regenerating them must give the committed blocks, and a changed source must change the text."""

import json

import pytest

from harness.analysis import docs_numbers


def test_the_committed_docs_blocks_match_the_committed_files():
    text = docs_numbers.DOC.read_text()
    assert docs_numbers.render(text, docs_numbers.generated()) == text, \
        f"docs/results.md is out of date: run {docs_numbers.COMMAND}"


def test_the_readme_summary_is_the_reference_reports_paragraph():
    text = docs_numbers.README.read_text()
    assert docs_numbers.render(text, docs_numbers.generated(docs_numbers.README_BLOCKS)) == text, \
        f"README.md's findings are out of date: run {docs_numbers.COMMAND}"
    report = (docs_numbers.REFERENCE / "report.md").read_text()
    assert docs_numbers.findings_block()[0] in text
    if "## In one paragraph" in report:  # a report written before the paragraph existed has none
        assert docs_numbers.findings_block()[0] in report


def test_a_changed_baseline_changes_the_noise_block(tmp_path):
    saved = json.loads(docs_numbers.BASELINE.read_text())
    saved["noise"]["mlp/w8"]["sd_pp"] = 0.54  # the number the docs once typed by hand
    path = tmp_path / "smoke.json"
    path.write_text(json.dumps(saved))
    text = docs_numbers.DOC.read_text()
    changed = docs_numbers.render(text, {"noise": docs_numbers.noise_block(path)})
    assert changed != text and "| mlp / W8 | 0.54 |" in changed


def test_a_missing_block_is_an_error():
    with pytest.raises(ValueError, match="docs block 'noise' not found"):
        docs_numbers.render("no markers here", {"noise": ["x"]})


def test_the_committed_gate_power_file_has_every_layout_rate_and_group():
    from harness.analysis import gate_power

    saved = json.loads(gate_power.SAVED.read_text())
    assert saved["format"] == gate_power.FORMAT and saved["draws"] == gate_power.DRAWS
    assert saved["seeds_per_run"] == gate_power.SEEDS and saved["source"] == "results/reference"
    assert set(saved["layouts"]) == {"smoke", "full mlp+cnn grid"}
    for layout in saved["layouts"].values():
        assert set(layout["false_failures"]) == set(layout["false_failure_draws"]) == {"1", "0.5", "0"}
        assert set(layout["power"]) == {"2", "1"} and layout["power_draws"] >= 50
        assert set(layout["power"]["2"]) == set(layout["power"]["1"]) and layout["power"]["2"]
        rates = list(layout["false_failures"].values()) + [p for e in layout["power"].values() for p in e.values()]
        assert all(0.0 <= r <= 1.0 for r in rates)
    assert set(saved["layouts"]["smoke"]["power"]["2"]) == {"cnn/w4/qat", "cnn/w8/qat", "mlp/w4/qat", "mlp/w8/qat"}


def test_a_changed_gate_power_file_changes_the_docs(tmp_path):
    from harness.analysis import gate_power

    saved = json.loads(gate_power.SAVED.read_text())
    saved["layouts"]["smoke"]["power"]["2"]["mlp/w8/qat"] = 0.5
    path = tmp_path / "gate-power.json"
    path.write_text(json.dumps(saved))
    text = docs_numbers.DOC.read_text()
    changed = docs_numbers.render(text, {"gate-power": docs_numbers.gate_power_block(path)})
    assert changed != text and "**mlp/w8/qat 50%**" in changed  # below 80%: named in bold
    path.write_text(json.dumps({**saved, "format": "other"}))
    with pytest.raises(ValueError, match="not a qatbench-gate-power file"):
        docs_numbers.gate_power_block(path)


def test_a_changed_baseline_changes_the_baseline_power_block(tmp_path):
    """The power per group is recomputed from the baseline's seeds (seeded draws): noisier seeds of one
    configuration lower its group's power."""
    saved = json.loads(docs_numbers.BASELINE.read_text())
    entry = saved["entries"]["mlp-last3-w8a8"]
    for seed, value in entry["seeds"].items():
        value["drop_pp"] += 3.0 * (int(seed) - 1)  # a 3 pp spread over the seeds
    path = tmp_path / "smoke.json"
    path.write_text(json.dumps(saved))
    assert docs_numbers.baseline_power_block(path) == docs_numbers.baseline_power_block(path)  # deterministic
    row = next(line for line in docs_numbers.baseline_power_block(path) if line.startswith("| mlp/w8/qat "))
    assert "**" in row, row  # below 80% at 2 pp


def test_the_run_block_counts_cases_commits_cpus_and_seeds(tmp_path):
    import shutil

    assert docs_numbers._seed_ranges({0, 1, 2, 3, 5, 7, 8}) == "0–3, 5, 7–8"
    picked = sorted((docs_numbers.REFERENCE / "cases").glob("mlp-last1-w8a8*.json"))[:3]
    (tmp_path / "cases").mkdir()
    for path in picked:
        shutil.copy(path, tmp_path / "cases" / path.name)
    lines = docs_numbers.run_block(tmp_path)
    assert lines[0] == "- 3 cases: 3 passed"
    assert lines[1].startswith("- commit: ") and lines[2].startswith("- CPU: Intel(R) Xeon(R)")
    assert lines[3].startswith("- mlp: 3 cases, seeds ") and lines[3].endswith(", 1,000 test examples")
