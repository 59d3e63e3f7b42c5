"""The GitHub workflows parse and have what the nightly GPU run and CI need. Pure: no TensorFlow."""

from pathlib import Path

import re
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


@pytest.mark.parametrize("name", ["nightly-gpu.yml", "ci.yml"])
def test_workflow_loads_with_required_keys(name):
    workflow = load(name)
    assert workflow["name"] and triggers(workflow) and workflow["jobs"]
    for job in workflow["jobs"].values():
        assert job["runs-on"] and job["steps"]
        assert any(step.get("uses", "").startswith("actions/checkout@") for step in job["steps"])
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
        assert part in command.replace("$baseline", "results/baselines/full.json"), part
    upload = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload and upload[0]["with"]["path"].rstrip("/") == "results" and upload[0].get("if") == "always()"


def install_commands(job: dict) -> list:
    return [line.strip() for line in run_text(job).splitlines() if line.strip().startswith("./install.sh")]


def test_nightly_gpu_installs_the_cuda_build_and_ci_the_cpu_one():
    (nightly,) = load("nightly-gpu.yml")["jobs"].values()
    (ci,) = load("ci.yml")["jobs"].values()
    assert install_commands(nightly) == ["./install.sh --gpu"]  # else TensorFlow finds no CUDA libraries
    assert install_commands(ci) == ["./install.sh"]  # GitHub's runner has no GPU: no CUDA wheels


@pytest.mark.parametrize("name", ["nightly-gpu.yml", "ci.yml"])
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
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    commands = [line.strip() for line in run_text(job).splitlines()]
    assert commands.index("./install.sh") < commands.index(readme_test_command())


def test_ci_script_runs_the_readme_test_command():
    script = (WORKFLOWS.parents[1] / ".ci" / "run").read_text().splitlines()
    assert readme_test_command() in [line.strip() for line in script]
    assert any("./install.sh" in line for line in script)
