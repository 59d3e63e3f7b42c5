"""One multiworker task: ``python -m harness.distributed.worker JOB.json INDEX``.

Started by harness/distributed/launcher.py (TF_CONFIG set per worker) or, on a cluster, once per task by the
cluster's launcher (TF_CONFIG set by the environment, or Slurm: ``srun python -m harness.distributed.worker
job.json``). The MultiWorkerMirroredStrategy is created first, before any other TensorFlow op
("Collective ops must be configured at program startup"). Every worker fine-tunes; the chief
then converts, audits and measures and writes the record fields to ``result.json`` beside the job.
Each worker writes only ``worker-INDEX.json`` (weight digests, or its error) in the job folder.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from harness.results.records import write_atomic


def _fault_callbacks(fault, index: int) -> list:
    """Test hook: make this worker die, hang or raise at a given fine-tuning step."""
    if not fault or int(fault.get("worker", -1)) != index:
        return []
    from harness.backend import keras

    step, mode = int(fault.get("step", 1)), fault.get("mode", "kill")

    class Fault(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 != step:
                return
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif mode == "hang":
                time.sleep(10 ** 6)
            else:
                raise RuntimeError(f"injected fault at step {step}")

    return [Fault()]


def task_index() -> int:
    """This task's index on a cluster: TF_CONFIG's, else Slurm's."""
    if os.environ.get("TF_CONFIG"):
        return int(json.loads(os.environ["TF_CONFIG"]).get("task", {}).get("index", 0))
    return int(os.environ.get("SLURM_PROCID", "0"))


def write_job(path: Path, case_id: str, tier: str, workers: int, cache_dir: str, threads: int) -> Path:
    """A job file for a cluster run of one suite case (``--write-job``)."""
    from dataclasses import asdict

    from harness.case import cache
    from harness.design import grid, registry
    from harness.distributed import launcher
    from harness.design.config import RunOptions

    found = [c for c in grid.cases_for(RunOptions(tier=tier, strategy="multiworker", workers=workers))
             if c.id == case_id]
    if not found:
        raise SystemExit(f"no case {case_id!r} in tier {tier!r}")
    case, spec = found[0], registry.get(found[0].model)
    job = launcher.Job(case.as_dict(), launcher.spec_to_dict(spec, tier), cache.spec_fingerprint(spec, tier),
                       cache_dir, threads)
    path.write_text(json.dumps(asdict(job), indent=1))
    return path


CLUSTER_MAX = 1024  # --write-job: tasks of a cluster job (nodes, not this machine's cores); threads per task


def _write_job_args(argv: list) -> tuple:
    """--write-job JOB.json CASE_ID [TIER [WORKERS [CACHE [THREADS]]]], checked: SystemExit with one line."""
    from harness.options import Bad, default_cache_dir, parse_tier

    rest = argv[1:] + [None] * 6
    if not rest[0] or not rest[1]:
        raise SystemExit("usage: python -m harness.distributed.worker --write-job JOB.json CASE_ID "
                         "[TIER [WORKERS [CACHE [THREADS]]]]")
    try:
        tier = parse_tier(rest[2] or "smoke")
        workers, threads = int(rest[3] or 2), int(rest[5] or 0)
    except (Bad, ValueError) as exc:
        raise SystemExit(f"--write-job: {exc}") from None
    if not 1 <= workers <= CLUSTER_MAX or not 0 <= threads <= CLUSTER_MAX:
        raise SystemExit(f"--write-job: workers must be in 1..{CLUSTER_MAX} and threads in 0..{CLUSTER_MAX}, "
                         f"got {workers} and {threads}")
    return Path(rest[0]), rest[1], tier, workers, rest[4] or str(default_cache_dir()), threads


def main(argv: list) -> int:
    if argv and argv[0] == "--write-job":
        print(write_job(*_write_job_args(argv)))
        return 0
    if not argv:
        raise SystemExit("usage: python -m harness.distributed.worker JOB.json [INDEX]")
    job_path = Path(argv[0])
    try:
        index = int(argv[1]) if len(argv) > 1 else task_index()
        job = json.loads(job_path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"harness.distributed.worker: cannot start from {job_path}: {type(exc).__name__}: {exc}") from None
    report_path = job_path.parent / f"worker-{index}.json"
    start = time.perf_counter()
    try:
        from harness.distributed import strategy  # imports TensorFlow; the strategy comes next, before any op

        tuner = strategy.worker_tuner(job["case"]["workers"], job["threads"],
                                        _fault_callbacks(job.get("fault"), index))
        from harness.distributed import launcher
        from harness.case import pipeline

        case, spec = launcher.case_from_dict(job["case"]), launcher.spec_from_dict(job["spec"])
        fingerprint = pipeline.spec_fingerprint(spec, case.tier)
        if fingerprint != job["spec_fingerprint"]:
            raise RuntimeError(f"spec fingerprint {fingerprint} differs from the parent's {job['spec_fingerprint']}")
        env = pipeline.Environment(Path(job["cache_dir"]), job.get("git_commit"), job["threads"])
        record = pipeline.measure_here(case, spec, env, tuner=tuner)
    except Exception as exc:  # reported to the parent, which turns it into the case's one-line error
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
        write_atomic(report_path, {"index": index, "error": {"type": type(exc).__name__, "message": text}})
        print(f"worker {index}: {type(exc).__name__}: {text}", file=sys.stderr, flush=True)
        return 1
    wall = time.perf_counter() - start
    if tuner.is_chief:  # the .tflite bytes go beside the JSON record (harness/distributed/launcher.py reads both)
        from harness.distributed.launcher import TFLITE_FILE
        from harness.results.records import write_bytes_atomic

        write_bytes_atomic(job_path.parent / TFLITE_FILE, record.pop(pipeline.TFLITE))
        write_atomic(job_path.parent / "result.json", {"record": record})
    write_atomic(report_path, {"index": index, "chief": tuner.is_chief, "pid": os.getpid(), "wall_s": wall,
                               "digests": tuner.digests})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
