"""Launch a multiworker case on this machine: W worker processes on 127.0.0.1, one TF_CONFIG each.

The parent (the pytest process) pre-trains/loads the cached float model once, writes a job file,
spawns ``python -m harness.distributed.worker`` W times with free ports, and watches them. Worker 0 is the
chief: it converts, audits and measures, and writes the record fields to a JSON file that the
parent reads; the other workers only fine-tune and write their weight digests to the job folder.
A worker that exits non-zero, or a run past the timeout, fails the case with a one-line reason
and kills every remaining worker (each has its own process group and dies with its parent).
No TensorFlow in this module.
"""

from __future__ import annotations

import dataclasses
import importlib
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

import harness
from harness.options import xdist_worker
from harness.design.config import Case, QuantConfig, Selection
from harness.design.registry import ModelSpec

ROOT = Path(__file__).resolve().parents[2]  # the project folder (harness/distributed/launcher.py)
TIMEOUT_ENV, DEFAULT_TIMEOUT_S = "QATBENCH_WORKER_TIMEOUT", 1800.0  # whole case, all workers
POLL_S = 0.2
RESULT = "result.json"  # the chief's record fields
TFLITE_FILE = "quant.tflite"  # the chief's audited .tflite, beside its record fields
ABSL_LINE = re.compile(r"^[IWEF]\d{4} |^WARNING: All log messages")


class WorkerFailed(RuntimeError):
    """A worker died, failed or hung; the message is one line. ``pids``: the workers (all stopped)."""

    pids: tuple = ()


def worker_timeout() -> float:
    """$QATBENCH_WORKER_TIMEOUT seconds (finite, 1 s .. 7 days), else 1800; a bad value names the variable."""
    from harness.options import Bad, env_seconds

    try:
        return env_seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
    except Bad as exc:
        raise ValueError(str(exc)) from None


# -- job files ----------------------------------------------------------------------------------
# A spec travels to the workers whole: every field of every (nested) dataclass, found by
# dataclasses.fields, so a field added later travels too (weights_env keys the cache by the user's
# weights file; the thresholds; every tier). Tuples and mappings are tagged, so they come back as
# tuples and dicts (in their order), and dataclasses as their own types.
SPEC_CODEC = 2  # 1: a hand-picked subset of the fields; 2: every field (encode/decode)
DATACLASS, TUPLE, MAPPING = "__dataclass__", "__tuple__", "__mapping__"
SCALARS = (str, int, float, bool, type(None))


def encode(value, path: str = "value"):
    """``value`` as JSON data that ``decode`` turns back into an equal value of the same types; a value
    that cannot travel losslessly (a set, a tuple subclass, an object) raises TypeError naming its path."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        return {DATACLASS: f"{cls.__module__}:{cls.__qualname__}",
                "fields": {f.name: encode(getattr(value, f.name), f"{path}.{f.name}")
                           for f in dataclasses.fields(value)}}
    if type(value) is tuple:
        return {TUPLE: [encode(v, f"{path}[{i}]") for i, v in enumerate(value)]}
    if type(value) is list:
        return [encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if type(value) is dict:
        return {MAPPING: [[encode(k, f"{path} key"), encode(v, f"{path}[{k!r}]")] for k, v in value.items()]}
    if type(value) in SCALARS:
        return value
    raise TypeError(f"{path}: a {type(value).__name__} cannot be sent to a worker losslessly")


def _dataclass_type(name: str) -> type:
    module, _, qualname = name.partition(":")
    found = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not (isinstance(found, type) and dataclasses.is_dataclass(found)):
        raise ValueError(f"{name} is not a dataclass")
    return found


def _build(cls: type, values: dict):
    """An instance of ``cls`` with exactly these field values (fields with init=False set after)."""
    names = {f.name for f in dataclasses.fields(cls)}
    if set(values) != names:
        raise ValueError(f"{cls.__qualname__}: the job has fields {sorted(values)}, this code {sorted(names)}; "
                         "write the job again with this version")
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    obj = cls(**{k: v for k, v in values.items() if k in init})
    for name in names - init:
        object.__setattr__(obj, name, values[name])
    return obj


def decode(data):
    """The value ``encode`` was given: dataclasses as their types, tuples as tuples, dicts in order."""
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    if TUPLE in data:
        return tuple(decode(v) for v in data[TUPLE])
    if MAPPING in data:
        return {decode(k): decode(v) for k, v in data[MAPPING]}
    values = {name: decode(v) for name, v in data["fields"].items()}
    return _build(_dataclass_type(data[DATACLASS]), values)


def spec_to_dict(spec: ModelSpec, tier: Optional[str] = None) -> dict:
    """The whole spec, for a worker to compute the same cache key and config hash and check the same
    thresholds. ``tier``, if given, must be one of the spec's (checked here, in the parent)."""
    if tier is not None:
        spec.tier(tier)
    return {"codec": SPEC_CODEC, "tier": tier, "spec": encode(spec, "spec")}


def spec_from_dict(d: dict) -> ModelSpec:
    """The parent's spec (registry entry or a custom one built in a test), rebuilt in a worker."""
    if d.get("codec") != SPEC_CODEC:
        raise ValueError(f"the job's spec has codec {d.get('codec')!r}, this version reads {SPEC_CODEC}: "
                         "write the job again with this version")
    spec = decode(d["spec"])
    if not isinstance(spec, ModelSpec):
        raise ValueError(f"the job's spec is a {type(spec).__name__}, not a ModelSpec")
    return spec


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


def _worker_path() -> str:
    """This process's import path for the workers: a model a project registered from its conftest.py
    (a Ref like ``conftest:build_tiny``) imports there as it does here, from an installed qatbench too."""
    here = [p for p in sys.path if p and Path(p).is_dir()]
    return os.pathsep.join(dict.fromkeys([str(ROOT), *here, *filter(None, [os.environ.get("PYTHONPATH")])]))


def _worker_command(folder: Path, index: int) -> list:
    """The worker module, run in the parent's folder (a project's relative paths work there) with
    qatbench's own ``harness`` first on the path, ahead of any ``harness`` in that folder."""
    start = (f"import runpy, sys; sys.path.insert(0, {str(ROOT)!r}); "
             "runpy.run_module('harness.distributed.worker', run_name='__main__', alter_sys=True)")
    return [sys.executable, "-c", start, str(folder / "job.json"), str(index)]


def spawn(folder: Path, workers: int) -> list:
    ports = free_ports(workers)
    procs = []
    for index in range(workers):
        env = dict(os.environ, TF_CONFIG=tf_config(ports, index), PYTHONPATH=_worker_path())
        harness.set_tf_environment(env)
        log = open(folder / f"worker-{index}.log", "wb")
        procs.append(subprocess.Popen(_worker_command(folder, index), cwd=os.getcwd(), env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent))
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
        from harness.case.train import TrainingDiverged

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
        result["record"]["_tflite"] = (folder / TFLITE_FILE).read_bytes()  # pipeline.TFLITE (no TF import here)
        reports = [json.loads((folder / f"worker-{i}.json").read_text()) for i in range(workers)]
        ok = True
        return {**result, "reports": reports, "launch_s": elapsed, "pids": [p.pid for p in procs]}
    finally:
        if ok and not keep:
            shutil.rmtree(folder, ignore_errors=True)


# -- the parent's side of a multiworker case ----------------------------------------------------
def measure_on_workers(case: Case, spec: ModelSpec, env, timeout_s: Optional[float] = None, fault: Optional[dict] = None) -> dict:
    """Pre-train or load the float model here (once, not in every worker), then fine-tune on W workers."""
    from harness.case import cache

    start = time.perf_counter()
    data = cache.load_data(spec, case.tier)
    base = cache.pretrained(spec, case.tier, spec.tier(case.tier).pretrain_seed(case.seed), data,
                                env.cache_dir)
    threads = worker_threads(env.threads, case.workers)
    job = Job(case.as_dict(), spec_to_dict(spec, case.tier), cache.spec_fingerprint(spec, case.tier),
              str(env.cache_dir), threads, env.git_commit, xdist_worker() is None, fault)
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
