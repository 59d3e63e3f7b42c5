"""docs/results.md's measured numbers are generated from the committed files (harness/analysis/docs_numbers.py):
regenerating them must give the committed blocks, and a changed source must change the text."""

import json

import pytest

from harness.analysis import docs_numbers


def test_the_committed_docs_blocks_match_the_committed_files():
    text = docs_numbers.DOC.read_text()
    assert docs_numbers.render(text, docs_numbers.generated()) == text, \
        f"docs/results.md is out of date: run {docs_numbers.COMMAND}"


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
