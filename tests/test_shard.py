"""--qat-shard I/K: shards partition the selected cases by cost, share one run folder, and merge."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from harness import options
from harness.results import records
from harness.design import grid, shard
from harness.design.config import RunOptions

ROOT = Path(__file__).resolve().parents[1]
SELECTION = "mlp and last1 and w8a8"
ALL_CASES = grid.cases_for(RunOptions(tier="full")) + grid.cases_for(RunOptions(tier="smoke"))


# -- the split (pure) -------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(ALL_CASES), unique_by=lambda c: c.id, min_size=0, max_size=80),
       st.integers(1, 12))
def test_shards_partition_the_cases_and_balance_cost(cases, k):
    costs = shard.costs(cases)
    parts = [shard.shard_ids(cases, i, k) for i in range(k)]
    assert sorted(i for part in parts for i in part) == sorted(c.id for c in cases)  # each exactly once
    assert parts == [shard.shard_ids(list(reversed(cases)), i, k) for i in range(k)]  # order-independent
    if cases:
        loads = [sum(costs[i] for i in part) for part in parts]
        assert max(loads) <= sum(costs.values()) / k + max(costs.values()) + 1e-6


@settings(max_examples=30, deadline=None)
@given(st.floats(0.01, 1e6), st.integers(1, 50), st.integers(1, 10))
def test_assign_bound_with_arbitrary_costs(scale, n, k):
    cost = {f"c{i}": scale * ((i * 7919) % 97 + 1) for i in range(n)}
    parts = shard.assign(cost, k)
    loads = [sum(cost[i] for i in p) for p in parts]
    assert sum(len(p) for p in parts) == n and set().union(*parts) == set(cost)
    assert max(loads) <= sum(cost.values()) / k + max(cost.values()) + 1e-6


def test_cost_follows_model_and_tier():
    by_id = {c.id: c for c in grid.cases_for(RunOptions(tier="full"))}
    assert shard.case_cost(by_id["resnet50-last1-w8a8"]) > shard.case_cost(by_id["mlp-last1-w8a8"])


# -- the option -------------------------------------------------------------------------------
def test_shard_parses():
    assert options.parse_shard("0/1") == (0, 1)
    assert options.parse_shard(" 2/3 ") == (2, 3)
    assert options.parse_shard("999/1000") == (999, 1000)


@pytest.mark.parametrize("value", ["3/3", "-1/2", "0/0", "1", "a/b", "0/1001", "1/2/3", ""])
def test_bad_shard_is_one_line(value):
    with pytest.raises(options.Bad, match=r"shard must be I/K") as info:
        options.parse_shard(value)
    assert "\n" not in str(info.value)


def pytest_run(*args, timeout=300):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "-p", "no:randomly", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def collected(*args, check=True) -> list:
    out = pytest_run("--collect-only", "-q", *args)
    assert out.returncode == 0 or not check, out.stdout + out.stderr
    assert "already holds" not in out.stderr
    return [line.split("[", 1)[1].rstrip("]") for line in out.stdout.splitlines() if "::test_qat_case[" in line]


def test_collected_shards_partition_a_k_selection():
    whole = collected("-k", "mlp and w8a8", "--qat-tier", "smoke")
    parts = [collected("-k", "mlp and w8a8", "--qat-tier", "smoke", "--qat-shard", f"{i}/3") for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(whole) and all(parts)


def test_a_bad_shard_is_a_usage_error():
    out = pytest_run("--collect-only", "-q", "--qat-shard", "3/3")
    assert out.returncode == 4 and "shard must be I/K" in out.stderr


def fake_record(run_dir: Path, case_id: str) -> None:
    path = records.case_path(run_dir, case_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"case_id": case_id, "status": "passed"}))


def test_shared_folder_is_refused_only_for_this_shards_cases(tmp_path):
    args = ("-k", SELECTION, "--qat-tier", "smoke", "--qat-results", str(tmp_path))
    owner = {i: collected(*args, "--qat-run-id", f"probe{i}", "--qat-shard", f"{i}/3") for i in range(3)}
    fake_record(tmp_path / "run", owner[0][0])
    mine = pytest_run("--collect-only", "-q", *args, "--qat-run-id", "run", "--qat-shard", "0/3")
    assert mine.returncode == 4 and "already holds records" in mine.stderr and "--qat-resume run" in mine.stderr
    # another shard may use the folder, and the shard may resume it (the session end then merges the
    # fake record, which is unreadable: hence check=False)
    assert collected(*args, "--qat-run-id", "run", "--qat-shard", "1/3", check=False) == owner[1]
    assert collected(*args, "--qat-resume", "run", "--qat-shard", "0/3", check=False) == owner[0]
    unsharded = pytest_run("--collect-only", "-q", *args, "--qat-run-id", "run")
    assert unsharded.returncode == 4  # without --qat-shard, a used folder is refused as before


# -- the job files ------------------------------------------------------------------------------
# The Slurm and Kubernetes job files are run with fakes in tests/test_deploy.py.


def test_github_workflow_is_a_matrix_over_shards_with_a_merge_job():
    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "sharded.yml").read_text())
    jobs = flow["jobs"]
    shards = jobs["shard"]["strategy"]["matrix"]["shard"]
    assert shards == list(range(int(flow["env"]["SHARDS"])))
    run = " ".join(step.get("run", "") for step in jobs["shard"]["steps"])
    assert '--qat-shard "${{ matrix.shard }}/${SHARDS}"' in run and "--qat-run-id" in run
    merge = " ".join(step.get("run", "") for step in jobs["merge"]["steps"])
    assert jobs["merge"]["needs"] == "shard" and "python3 -m harness merge" in merge and "--baseline" in merge


# -- end to end: 3 shards as separate processes, one folder, merged ------------------------------
@pytest.mark.slow
@pytest.mark.tf
def test_three_shards_into_one_folder_then_merge(tmp_path):
    # its own cache: pre-trained at 1 thread, these models must never serve a later run's default cache
    args = ("-k", SELECTION, "--qat-tier", "smoke", "--qat-results", str(tmp_path), "--qat-threads", "1",
            "--qat-cache", str(tmp_path / "cache"))
    whole = collected(*args)
    assert len(whole) == 3
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    procs = [subprocess.Popen(["nice", sys.executable, "-m", "pytest", "benchmarks", "-q", *args, "--qat-run-id",
                               "sweep", "--qat-shard", f"{i}/3"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(3)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    run_dir = tmp_path / "sweep"
    merged = subprocess.run([sys.executable, "-m", "harness", "merge", str(run_dir)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    lines = (run_dir / "records.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["case_id"] for line in lines) == sorted(whole)
    assert (run_dir / "report.md").is_file() and (run_dir / "summary.csv").is_file()
    again = pytest_run("-q", *args, "--qat-resume", "sweep", "--qat-shard", "1/3", timeout=600)
    assert again.returncode == 0, again.stdout[-3000:]  # a shard resumes: its case is not re-measured


def test_other_shards_cases_count_as_not_selected():
    from types import SimpleNamespace

    from harness import session as session_module

    session = session_module.QatSession.__new__(session_module.QatSession)
    session.config = SimpleNamespace(option=SimpleNamespace(keyword="", markexpr=""), args=["benchmarks"])
    session.collected_deselected = False
    session.options = RunOptions(tier="smoke")
    assert not session._narrowed()
    session.options = RunOptions(tier="smoke", shard=(0, 1))
    assert not session._narrowed()  # one shard of one is the whole run
    session.options = RunOptions(tier="smoke", shard=(1, 3))
    assert session._narrowed()


def test_merge_of_a_folder_without_cases_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "harness", "merge", str(tmp_path / "nope")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no run folder" in out.stderr


@pytest.mark.slow
@pytest.mark.tf
def test_a_shard_killed_mid_way_resumes_and_the_merge_is_whole(tmp_path):
    """SIGKILL one shard after its first record; --qat-resume finishes only what it had not
    measured, the other shard runs on its own, and the merged folder holds every case once."""
    import signal
    import time

    args = ("-k", "mlp and w8a8", "--qat-seeds", "0", "--qat-results", str(tmp_path), "--qat-cache",
            str(tmp_path / "cache"), "--qat-run-id", "sweep")
    whole = collected(*args[:-2])
    parts = [collected(*args[:-2], "--qat-shard", f"{i}/2") for i in range(2)]
    big = max(range(2), key=lambda i: len(parts[i]))
    assert len(parts[big]) >= 2 and sorted(parts[0] + parts[1]) == sorted(whole)
    command = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", *args]
    proc = subprocess.Popen(command + ["--qat-shard", f"{big}/2"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    cases = tmp_path / "sweep" / records.CASES_DIR
    deadline = time.time() + 600
    while time.time() < deadline and not list(cases.glob("*.json")):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    finished = {p.name: p.read_text() for p in cases.glob("*.json")}
    assert 1 <= len(finished) < len(parts[big]), "kill the shard mid-way"
    refused = pytest_run("-q", *args, "--qat-shard", f"{big}/2", timeout=300)
    assert refused.returncode == 4 and "--qat-resume sweep" in refused.stderr  # never overwritten silently
    resumed = pytest_run("-q", *args[:-2], "--qat-resume", "sweep", "--qat-shard", f"{big}/2", timeout=900)
    assert resumed.returncode == 0 and f"{len(finished)} skipped" in resumed.stdout, resumed.stdout[-2000:]
    assert all((cases / name).read_text() == text for name, text in finished.items())  # not re-measured
    other = pytest_run("-q", *args, "--qat-shard", f"{1 - big}/2", timeout=900)
    assert other.returncode == 0, other.stdout[-2000:]
    merged = subprocess.run([sys.executable, "-m", "harness", "merge", str(tmp_path / "sweep")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    rows = records.load_jsonl(tmp_path / "sweep" / "records.jsonl")
    assert sorted(r["case_id"] for r in rows) == sorted(whole)
