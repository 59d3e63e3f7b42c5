"""qatbench as a pytest plugin in someone else's project (issue 28): it installs from a copy of this
repository into a fresh virtualenv (dependencies from the system site-packages, no downloads), and

- in a project with its own ``harness`` package and no qatbench case, pytest runs as if qatbench were
  not installed (no environment variable, no TensorFlow or scipy, its own warnings); a --qat-* option
  there is one line saying that another ``harness`` shadows qatbench's;
- the README's "your project" conftest.py runs its model with plain ``pytest``; every case has the
  ``qatbench`` marker and a node id with a file part that selects it; ``--qat-skip`` and
  ``-m "not qatbench"`` deselect the cases; ``--qat-keep-tflite`` writes the audited .tflite;
- multiworker runs a conftest-registered model from the installed copy;
- the ``qatbench`` command runs the CLI.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TF_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")
HEAVY = ("tensorflow", "tf_keras", "tensorflow_model_optimization", "scipy")

ENV_TEST = '''
import os
import sys
import warnings


def test_qatbench_left_this_run_alone():
    assert os.environ.get("TF_USE_LEGACY_KERAS") is None
    assert not [m for m in sys.modules if m.split(".")[0] in {heavy!r}]


def test_warnings_are_this_projects():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        warnings.warn("mine", DeprecationWarning)
    assert caught
'''


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_is_packaged_and_qatbench_maps_to_its_folder():
    setup = pyproject()["tool"]["setuptools"]
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "harness").rglob("__init__.py")}
    folders.discard("harness.qatbench")  # installed as the top-level package qatbench
    assert set(setup["packages"]) == folders | {"qatbench"}
    assert setup["package-dir"] == {"qatbench": "harness/qatbench"}


def test_one_version_string_and_ranges_pinned_by_the_lock_file():
    project = pyproject()["project"]
    assert project["dynamic"] == ["version"] and "version" not in project
    assert pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "harness.__version__"}
    lock = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if line.strip() and not line.startswith("#"):
            assert sep, f"requirements.txt is the lock file: {line!r} has no exact pin"
            lock[name.lower()] = version
    for requirement in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group().lower()
        assert not re.search(r"==", requirement), requirement  # ranges for users' environments
        assert name in lock, f"{name} is a dependency but not pinned in requirements.txt"
    build = pyproject()["build-system"]["requires"]
    assert build == ["setuptools>=70.1"] and "setuptools" in lock  # builds wheels without the `wheel` package
    assert {"gpu", "test"} <= set(project["optional-dependencies"])
    assert not {"hypothesis", "pyyaml"} & {re.match(r"[A-Za-z0-9_.-]+", r).group().lower()
                                           for r in project["dependencies"]}


def test_the_plugin_module_is_light():
    """Loading the hooks imports neither TensorFlow nor scipy and sets no environment variable."""
    code = ("import os, sys; import harness.pytest_plugin; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})), "
            "os.environ.get('TF_USE_LEGACY_KERAS'))")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "None"], out.stdout + out.stderr


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> str:
    """pip install a copy of this repository (offline: --no-build-isolation, dependencies from the system)."""
    tmp = tmp_path_factory.mktemp("installed")
    source = tmp / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        (source / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run(["cp", "-r", str(ROOT / "harness"), str(source / "harness")], check=True)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp / "venv")], check=True)
    python = str(tmp / "venv" / "bin" / "python")
    done = subprocess.run([python, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", str(source)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return python


def pytest_in(folder: Path, python: str, *args: str, timeout: int = 900):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "QATBENCH_"))}
    env.update(QATBENCH_CACHE=str(folder / "cache"), QATBENCH_LATENCY="off")
    return subprocess.run([python, "-m", "pytest", *args, "-p", "no:cacheprovider"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=timeout)


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    (block,) = re.findall(r"```python\n(# conftest\.py of your project\n.*?)```", text, flags=re.S)
    return block


@pytest.mark.slow
def test_a_project_without_cases_or_with_its_own_harness_keeps_a_working_pytest(venv, tmp_path):
    (tmp_path / "test_env.py").write_text(ENV_TEST.format(heavy=HEAVY))
    plain = pytest_in(tmp_path, venv, "-q")
    assert plain.returncode == 0 and "2 passed" in plain.stdout, plain.stdout[-2000:] + plain.stderr[-2000:]
    assert "--qat-tier" in pytest_in(tmp_path, venv, "--help").stdout  # qatbench's hooks were loaded
    (tmp_path / "harness").mkdir()
    (tmp_path / "harness" / "__init__.py").write_text("OWN = True\n")
    (tmp_path / "test_own.py").write_text("import harness\n\n\ndef test_own():\n    assert harness.OWN is True\n")
    shadowed = pytest_in(tmp_path, venv, "-q")
    assert shadowed.returncode == 0 and "3 passed" in shadowed.stdout, shadowed.stdout[-2000:] + shadowed.stderr[-2000:]
    asked = pytest_in(tmp_path, venv, "-q", "--qat-tier", "smoke")
    assert asked.returncode == pytest.ExitCode.USAGE_ERROR, asked.stdout[-1500:] + asked.stderr[-1500:]
    (line,) = [x for x in asked.stderr.splitlines() if x.strip()]
    assert "another package named 'harness'" in line and "shadows qatbench's" in line
    cli = subprocess.run([str(Path(venv).with_name("qatbench")), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert cli.returncode == 0 and "merge" in cli.stdout  # run from elsewhere (cwd not on the command's path)


@pytest.mark.slow
@pytest.mark.tf
def test_the_readme_example_runs_selects_and_keeps_its_tflite(venv, tmp_path):
    (tmp_path / "conftest.py").write_text(readme_example())
    proc = pytest_in(tmp_path, venv, "-q", "--qat-keep-tflite", "--qat-run-id", "all")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "6 passed" in proc.stdout and "tiny-last2-w4a8" in proc.stdout
    run = tmp_path / "results" / "all"
    assert (run / "report.md").is_file()
    for record_file in (run / "cases").glob("*.json"):
        record = json.loads(record_file.read_text())
        kept = run / "cases" / f"{record['case_id']}.tflite"
        assert record["tflite_file"] == kept.name and record["tflite_bytes"] == kept.stat().st_size
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == record["tflite_sha256"]
    ids = pytest_in(tmp_path, venv, "--collect-only", "-q")
    node = "qatbench/test_qat.py::test_qat_case[tiny-last0-w8a8]"
    assert node in ids.stdout, ids.stdout[-1500:]
    one = pytest_in(tmp_path, venv, "-q", node, "--qat-run-id", "one")
    assert one.returncode == 0 and "1 passed" in one.stdout, one.stdout[-2000:] + one.stderr[-1500:]
    for deselect in (["--qat-skip"], ["-m", "not qatbench"]):
        skipped = pytest_in(tmp_path, venv, "--collect-only", "-q", *deselect)
        assert "6 deselected" in skipped.stdout, (deselect, skipped.stdout[-800:])


@pytest.mark.slow
@pytest.mark.tf
def test_multiworker_runs_a_conftest_model_from_the_installed_copy(venv, tmp_path):
    (tmp_path / "conftest.py").write_text(readme_example())
    proc = pytest_in(tmp_path, venv, "-q", "-k", "tiny-last1-w8a8", "--qat-strategy", "multiworker",
                     "--qat-workers", "2", "--qat-threads", "1")
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
