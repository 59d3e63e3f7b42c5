"""The GPU side without a GPU: install.sh --gpu (run against fake python3/apt-get, so nothing is
installed), what backend.devices() records on a CPU machine, and --qat-check-gpu refusing to start."""

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# TensorFlow's C++ logging (absl) writes to stderr whatever TF_CPP_MIN_LOG_LEVEL says; not pytest's message
TF_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")

# Stand-ins first on PATH: they log their arguments and succeed, so the script's control flow runs
# for real while no pip or apt ever does.
FAKE = """#!/bin/sh
echo "$(basename "$0") $*" >> "$FAKE_LOG"
exit 0
"""


def tensorflow_pin() -> str:
    (pin,) = re.findall(r"^tensorflow==(\S+)", (ROOT / "requirements.txt").read_text(), flags=re.M)
    return pin


def run_install(tmp_path: Path, *args: str):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python3", "apt-get"):
        (bin_dir / name).write_text(FAKE)
        (bin_dir / name).chmod(stat.S_IRWXU)
    # id -u says root, so the apt-get branch (taken when the Fashion-MNIST files are missing) hits the fake
    (bin_dir / "id").write_text("#!/bin/sh\necho 0\n")
    (bin_dir / "id").chmod(stat.S_IRWXU)
    log = tmp_path / "calls.log"
    log.write_text("")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_LOG=str(log))
    done = subprocess.run(["bash", str(ROOT / "install.sh"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    return done, log.read_text().splitlines()


def pip_installs(calls: list) -> list:
    return [line for line in calls if line.startswith("python3 -m pip install")]


def test_gpu_installs_tensorflow_and_cuda_at_the_pin_then_the_cpu_install(tmp_path):
    gpu, gpu_calls = run_install(tmp_path / "gpu", "--gpu")
    cpu, cpu_calls = run_install(tmp_path / "cpu")
    assert gpu.returncode == 0 and cpu.returncode == 0, gpu.stderr + cpu.stderr
    wanted = f"tensorflow[and-cuda]=={tensorflow_pin()}"
    gpu_pip, cpu_pip = pip_installs(gpu_calls), pip_installs(cpu_calls)
    assert gpu_pip[0] == f"python3 -m pip install {wanted}"
    assert gpu_pip[1:] == cpu_pip  # the rest exactly like the CPU install, in the same order
    assert "python3 -m pip install -r requirements.txt" in cpu_pip
    assert not any("and-cuda" in line for line in cpu_calls)
    assert gpu_calls[1:] == cpu_calls  # apt-get too, if the dataset is missing here


@pytest.mark.parametrize("args", [("--cpu",), ("--gpu", "extra"), ("gpu",)])
def test_unknown_argument_is_one_line_and_exit_2_before_installing(tmp_path, args):
    done, calls = run_install(tmp_path, *args)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "unknown argument" in done.stderr
    assert calls == []


def test_help_prints_usage_and_installs_nothing(tmp_path):
    done, calls = run_install(tmp_path, "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: ./install.sh") and "--gpu" in done.stdout
    assert calls == []


@pytest.mark.tf
def test_devices_on_this_cpu_machine():
    from harness.backend import devices, tf

    found = devices()
    assert set(found) == {"gpus", "summary", "driver", "cuda_version", "cudnn_version", "is_cuda_build"}
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU: the CPU-only answer does not apply")
    assert found["gpus"] == [] and "no GPU" in found["summary"]
    assert isinstance(found["is_cuda_build"], bool)
    found["gpus"].append("edited by a caller")
    assert devices()["gpus"] == []  # the cached answer is not shared with callers


@pytest.mark.tf
@pytest.mark.parametrize("script, driver", [("printf '550.54.15\\n550.54.15\\n'", "550.54.15"),
                                            ("echo 'NVIDIA-SMI has failed' >&2; exit 9", None)])
def test_driver_from_nvidia_smi_or_none(tmp_path, monkeypatch, script, driver):
    from harness import backend

    (tmp_path / "nvidia-smi").write_text(f"#!/bin/sh\n{script}\n")
    (tmp_path / "nvidia-smi").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert backend._nvidia_driver() == driver  # one value per GPU, the same on one machine


@pytest.mark.tf  # the check imports TensorFlow in the child
def test_check_gpu_without_a_gpu_is_a_usage_error_at_start_up(tmp_path):
    if subprocess.run(["sh", "-c", "command -v nvidia-smi"], capture_output=True).returncode == 0:
        pytest.skip("nvidia-smi present: this machine may have a GPU")
    done = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "--qat-check-gpu", "-q",
                           "--qat-results", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 4, done.stdout[-2000:] + done.stderr[-2000:]
    ours = [line for line in done.stderr.splitlines() if line.strip() and not TF_LOG.match(line)]
    assert len(ours) == 1 and ours[0].startswith("ERROR: --qat-check-gpu: TensorFlow sees no GPU"), ours
    assert "passed" not in done.stdout and "failed" not in done.stdout  # refused before any case ran
    assert not list(tmp_path.rglob("*.json"))
