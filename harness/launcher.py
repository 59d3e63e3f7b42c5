"""Launch a multiworker case on this machine: W worker processes on 127.0.0.1, one TF_CONFIG each.

The parent (the pytest process) pre-trains/loads the cached float model once, writes a job file,
spawns ``python -m harness.worker`` W times with free ports, and watches them. Worker 0 is the
chief: it converts, audits and measures, and writes the record fields to a JSON file that the
parent reads; the other workers only fine-tune and write their weight digests to the job folder.
A worker that exits non-zero, or a run past the timeout, fails the case with a one-line reason
and kills every remaining worker (each has its own process group and dies with its parent).
No TensorFlow in this module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from .config import Case, QuantConfig, Selection, Thresholds, TierConfig
from .registry import ModelSpec, Ref

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_ENV, DEFAULT_TIMEOUT_S = "QATBENCH_WORKER_TIMEOUT", 1800.0  # whole case, all workers
POLL_S = 0.2
RESULT = "result.json"  # the chief's record fields
ABSL_LINE = re.compile(r"^[IWEF]\d{4} |^WARNING: All log messages")


class WorkerFailed(RuntimeError):
    """A worker died, failed or hung; the message is one line. ``pids``: the workers (all stopped)."""

    pids: tuple = ()


def worker_timeout() -> float:
    """$QATBENCH_WORKER_TIMEOUT seconds (finite, 1 s .. 7 days), else 1800; a bad value names the variable."""
    from .options import Bad, env_seconds

    try:
        return env_seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
    except Bad as exc:
        raise ValueError(str(exc)) from None


# -- job files ----------------------------------------------------------------------------------
def spec_to_dict(spec: ModelSpec, tier: str) -> dict:
    """Every field of the spec a worker needs, so that it computes the same cache key and config hash
    (weights_env keys the cache by the user's weights file) and checks the same thresholds."""
    return {"name": spec.name, "builder": spec.builder.target, "dataset": spec.dataset.target,
            "input_shape": list(spec.input_shape), "num_units": spec.num_units,
            "unit_kinds": list(spec.unit_kinds), "tier": tier, "tier_config": asdict(spec.tier(tier)),
            "thresholds": asdict(spec.thresholds), "description": spec.description,
            "weights_env": spec.weights_env}


def _tuples(mapping: dict) -> dict:
    """JSON lists back to the tuples (of tuples) the frozen configs hold."""
    def back(value):
        return tuple(back(v) for v in value) if isinstance(value, list) else value
    return {k: back(v) for k, v in mapping.items()}


def spec_from_dict(d: dict) -> ModelSpec:
    """The parent's spec (registry entry or a custom one built in a test), rebuilt in a worker."""
    thresholds = Thresholds(**_tuples(d["thresholds"])) if "thresholds" in d else Thresholds()
    return ModelSpec(d["name"], Ref(d["builder"]), Ref(d["dataset"]), tuple(d["input_shape"]), d["num_units"],
                     tuple(d["unit_kinds"]), thresholds, {d["tier"]: TierConfig(**_tuples(d["tier_config"]))},
                     description=d.get("description", ""), weights_env=d.get("weights_env", ""))


def case_from_dict(d: dict) -> Case:
    return Case(d["model"], Selection(**d["selection"]), QuantConfig(**d["quant"]), d["tier"], d["seed"],
                d["strategy"], d["workers"])


@dataclass(frozen=True)
class Job:
    """Everything a worker needs; written as JSON into the job folder."""

    case: dict
    spec: dict
    spec_fingerprint: str
    cache_dir: str
    threads: int
    git_commit: Optional[str] = None
    measured_valid: bool = True  # False when other processes may use loopback (xdist)
    fault: Optional[dict] = None  # tests: {"worker": i, "step": k, "mode": "kill"|"hang"|"raise"}


def worker_threads(threads: int, workers: int) -> int:
    """Threads per worker: as asked, else an equal share of the cores (no oversubscription)."""
    return threads or max(1, (os.cpu_count() or 1) // workers)


# -- processes ----------------------------------------------------------------------------------
def free_ports(count: int) -> list:
    """Ports free on 127.0.0.1 right now (all bound at once, so they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports: list, index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def spawn(folder: Path, workers: int) -> list:
    ports = free_ports(workers)
    procs = []
    for index in range(workers):
        env = dict(os.environ, TF_CONFIG=tf_config(ports, index), TF_USE_LEGACY_KERAS="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        log = open(folder / f"worker-{index}.log", "wb")
        cmd = [sys.executable, "-m", "harness.worker", str(folder / "job.json"), str(index)]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True, preexec_fn=_die_with_parent))
        log.close()
    return procs


def kill_all(procs: list) -> None:
    """SIGKILL each worker's process group, then reap them."""
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a zombie we cannot reap
            pass


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    python = [ln for ln in lines if not ABSL_LINE.match(ln)]  # skip TensorFlow's C++ log lines
    errors = [ln for ln in python if "Error" in ln or "Exception" in ln]
    return ((errors or [""])[-1])[:300]


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _report(folder: Path, index: int) -> dict:
    try:
        return json.loads((folder / f"worker-{index}.json").read_text())
    except (OSError, ValueError):
        return {}


def _failure(folder: Path, index: int, code: int, elapsed: float) -> Exception:
    """The exception for a failed worker: its own error if it reported one, else how it died."""
    error = _report(folder, index).get("error")
    if error and error.get("type") == "TrainingDiverged":
        from .train import TrainingDiverged

        return TrainingDiverged(f"worker {index}: {error['message']}")
    if error:
        return WorkerFailed(f"multiworker: worker {index} failed: {error['type']}: {error['message']}; "
                            "stopped the others")
    reason = _last_line(folder / f"worker-{index}.log")
    return WorkerFailed(f"multiworker: worker {index} {_describe_exit(code)} after {elapsed:.1f} s; stopped the "
                        "others" + (f"; its last line: {reason}" if reason else ""))


def watch(procs: list, folder: Path, timeout_s: float) -> float:
    """Wait for every worker to exit 0; on a failure or the timeout kill the rest and raise WorkerFailed."""
    start = time.monotonic()
    try:
        while True:
            codes = [p.poll() for p in procs]
            elapsed = time.monotonic() - start
            bad = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if bad:
                index, code = min(bad, key=lambda b: _report(folder, b[0]).get("error") is None)
                raise _failure(folder, index, code, elapsed)
            if all(c == 0 for c in codes):
                return elapsed
            if elapsed > timeout_s:
                hung = [i for i, c in enumerate(codes) if c is None]
                raise WorkerFailed(f"multiworker: worker(s) {', '.join(map(str, hung))} still running after "
                                   f"{timeout_s:.0f} s (timeout; QATBENCH_WORKER_TIMEOUT); killed them")
            time.sleep(POLL_S)
    finally:
        kill_all(procs)


def launch(job: Job, workers: int, timeout_s: Optional[float] = None, keep: bool = False) -> dict:
    """Run ``job`` on ``workers`` local processes; returns the chief's result plus every worker's report."""
    folder = Path(tempfile.mkdtemp(prefix="qatbench-mw-"))
    ok = False
    try:
        (folder / "job.json").write_text(json.dumps(asdict(job)))
        procs = spawn(folder, workers)
        try:
            elapsed = watch(procs, folder, worker_timeout() if timeout_s is None else timeout_s)
        except WorkerFailed as exc:
            exc.args = (f"{exc.args[0]} (logs: {folder})",)
            exc.pids = tuple(p.pid for p in procs)
            raise
        result = json.loads((folder / RESULT).read_text())
        reports = [json.loads((folder / f"worker-{i}.json").read_text()) for i in range(workers)]
        ok = True
        return {**result, "reports": reports, "launch_s": elapsed, "pids": [p.pid for p in procs]}
    finally:
        if ok and not keep:
            shutil.rmtree(folder, ignore_errors=True)


# -- the parent's side of a multiworker case ----------------------------------------------------
def run_case(case: Case, spec: ModelSpec, env, timeout_s: Optional[float] = None, fault: Optional[dict] = None) -> dict:
    """Pre-train or load the float model here (once, not in every worker), then fine-tune on W workers."""
    from . import cache

    start = time.perf_counter()
    data = cache.load_data(spec, case.tier)
    base = cache.pretrained(spec, case.tier, spec.tier(case.tier).pretrain_seed(case.seed), data,
                                env.cache_dir)
    threads = worker_threads(env.threads, case.workers)
    job = Job(case.as_dict(), spec_to_dict(spec, case.tier), cache.spec_fingerprint(spec, case.tier),
              str(env.cache_dir), threads, env.git_commit, "PYTEST_XDIST_WORKER" not in os.environ, fault)
    out = launch(job, case.workers, timeout_s)
    record = dict(out["record"])
    digests = [r["digests"] for r in out["reports"]]
    record.update(
        pretrain_s=base.train_s, pretrained_cached=base.cached, worker_threads=threads,
        worker_weight_digests=digests,
        workers_identical={label: len({d[label][0] for d in digests}) == 1 for label in digests[0]},
        worker_wall_s=[r["wall_s"] for r in out["reports"]], launch_s=out["launch_s"],
        chief_wall_s=record.get("wall_s"), wall_s=time.perf_counter() - start,
    )
    record["measured_valid"] = bool(record.get("measured_valid")) and job.measured_valid
    return record
