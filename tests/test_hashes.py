"""The config hash and the cache key cover every module that shapes the numbers, not only the builder
and the loader: an edit to a layer class or to a data helper must make baselines stale."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.tf

HASHES = """
from harness.case import cache
from harness.design import registry
for name in ("minilm2", "mlp"):
    spec = registry.get(name)
    print(name, cache.spec_fingerprint(spec, "smoke"), cache.cache_key(spec, "smoke", 0))
"""


def hashes(root: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", HASHES], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line.split()}


def copy_of_the_code(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "harness", tmp_path / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def edited_copy(tmp_path: Path, module: str, old: str, new: str) -> Path:
    path = copy_of_the_code(tmp_path) / "harness" / module
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return tmp_path


@pytest.mark.parametrize("module, old, new, changed, unchanged", [
    ("models/transformer.py", "class SelfAttention(", "# an edit to the attention layer\nclass SelfAttention(",
     "minilm2", "mlp"),
    ("models/data.py", "def subset(", "# an edit to a data helper\ndef subset(", "mlp", None),
    ("models/quantizable.py", "class NoOpQuantizeConfig(", "# an edit to a block config\nclass NoOpQuantizeConfig(",
     "mlp", None),
    ("case/train.py", "def keras_labels(", "# an edit to fine-tuning\ndef keras_labels(", "mlp", None),
])
def test_an_edit_that_may_change_the_numbers_changes_the_hashes(tmp_path, module, old, new, changed, unchanged):
    before = hashes(ROOT)
    after = hashes(edited_copy(tmp_path, module, old, new))
    assert after[changed][0] != before[changed][0]  # config hash: the baseline goes stale
    assert after[changed][1] != before[changed][1]  # the pre-trained cache entry is rebuilt
    if unchanged:
        assert after[unchanged] == before[unchanged]  # the mlp does not use the attention layer


MID_RUN = """
import sys
from pathlib import Path
from harness.case import cache
from harness.design import registry
spec = registry.get("mlp")
before = cache.spec_fingerprint(spec, "smoke"), cache.cache_key(spec, "smoke", 0)
for module in ("case/fakequant.py", "case/pipeline.py", "models/zoo.py", "case/train.py"):
    path = Path(sys.argv[1]) / "harness" / module
    path.write_text(path.read_text() + "\\n# an edit made while the run is going on\\n")
after = cache.spec_fingerprint(spec, "smoke"), cache.cache_key(spec, "smoke", 0)
print("same" if after == before else f"changed {before} {after}")
"""


def test_an_edit_during_a_run_does_not_change_the_hashes_of_the_code_already_loaded(tmp_path):
    """The code that runs is the code imported at start, so the cases measured after a mid-run edit keep its
    hash; the next run, which imports the edited code, gets another."""
    root = copy_of_the_code(tmp_path)
    before = hashes(root)
    done = subprocess.run([sys.executable, "-c", MID_RUN, str(root)], cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "same", done.stdout[-500:]
    after = hashes(root)
    assert after["mlp"][0] != before["mlp"][0] and after["mlp"][1] != before["mlp"][1]
