"""Nothing measured is lost at the end of a session.

- A case record the run folder refuses (read-only folder, full disk, file-size limit, a value JSON
  cannot hold) is kept in memory by the session and copied to a rescue folder outside the results
  (``$TMPDIR/qatbench-rescue/<run-id>-<hash of its path>/``); the session end merges it like any
  record, says where it is, and writes it back into the run folder once the folder accepts it.
- SIGTERM (what Slurm and Kubernetes send) ends a session like Ctrl-C: it raises KeyboardInterrupt,
  the current case is recorded as ``interrupted``, the records are merged and the report written.
  A SIGTERM during the session end is ignored so the report can still be written.

Pure Python, no TensorFlow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable, Optional

from harness.errors import describe
from harness.results import records

RESCUE_ENV = "QATBENCH_RESCUE"


def rescue_dir(run_dir: Path) -> Path:
    """Outside the results: ``$QATBENCH_RESCUE`` or ``$TMPDIR/qatbench-rescue``, one folder per run folder."""
    root = os.environ.get(RESCUE_ENV) or Path(tempfile.gettempdir()) / "qatbench-rescue"
    where = hashlib.sha256(str(Path(run_dir).absolute()).encode()).hexdigest()[:8]
    return Path(root) / f"{Path(run_dir).name}-{where}"


def plain(record: dict) -> dict:
    """The record as JSON can hold it: values JSON cannot encode become their repr."""
    def fallback(value):
        try:
            return records._jsonable(value)
        except TypeError:
            return repr(value)
    return json.loads(json.dumps(record, default=fallback))


def save_record(run_dir: Path, record: dict) -> Optional[Path]:
    """Copy a record to the rescue folder; None if that fails too."""
    try:
        return records.write_atomic(records.case_path(rescue_dir(run_dir), record["case_id"]), plain(record))
    except (OSError, TypeError, ValueError):
        return None


def save_text(run_dir: Path, name: str, text: str) -> Optional[Path]:
    path = rescue_dir(run_dir) / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        records.write_text_atomic(path, text)
        return path
    except OSError:
        return None


def pending(run_dir: Path) -> bool:
    """Does the rescue folder of ``run_dir`` hold records not yet back in the run folder?"""
    return any((rescue_dir(run_dir) / records.CASES_DIR).glob("*.json"))


def rescued_records(run_dir: Path) -> tuple:
    """(records, problems) saved in the rescue folder of ``run_dir`` (by any process of the run)."""
    folder = rescue_dir(run_dir)
    if not (folder / records.CASES_DIR).is_dir():
        return [], []
    found, problems = records.read_case_records(folder)
    return found, [f"rescue folder {folder}: {p}" for p in problems]


class SigtermAsInterrupt:
    """Turn SIGTERM into KeyboardInterrupt (pytest's clean stop), except while ``finishing()``."""

    def __init__(self, finishing: Callable[[], bool]):
        self.finishing = finishing
        self.received = 0
        self.installed = False

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        try:
            signal.signal(signal.SIGTERM, self._handle)
        except (ValueError, OSError):  # pragma: no cover - not the main interpreter
            return False
        self.installed = True
        return True

    def _handle(self, signum, frame):
        self.received += 1
        if self.finishing():
            return  # merging and writing the report: let it complete (Slurm still SIGKILLs after KillWait)
        raise KeyboardInterrupt("SIGTERM")


class RunFolderWarning(UserWarning):
    """A record in a run folder was skipped (malformed or unknown schema); one line naming it."""


@contextlib.contextmanager
def signals_deferred():
    """SIGINT and SIGTERM wait until the block is done (a record write is not cut in half by Ctrl-C)."""
    mask = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, mask)
    except (AttributeError, OSError, ValueError):  # pragma: no cover - platform without sigmask
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _restore(run_dir: Path, record: dict) -> bool:
    """Put a record the run folder refused earlier back into it (the folder healed)."""
    try:
        records.write_atomic(records.case_path(run_dir, record["case_id"]), record)
    except (OSError, TypeError, ValueError):
        return False
    records.case_path(rescue_dir(run_dir), record["case_id"]).unlink(missing_ok=True)
    return True


def merge_run(run_dir: Path, unwritten=()) -> tuple:
    """(merged, problems) of a run folder plus the records it refused (``unwritten``, in memory, and the
    rescue folder's); those are written back when the folder accepts them again. The merged list is
    returned even when records.jsonl cannot be written (it then goes to the rescue folder)."""
    run_dir = Path(run_dir)
    rescued, problems = rescued_records(run_dir)
    strays = list(unwritten) + rescued
    merged, found = records.collect(run_dir, extra=strays)
    problems = found + problems
    stray_ids = {id(r) for r in strays}
    left = [r["case_id"] for r in merged if id(r) in stray_ids and not _restore(run_dir, r)]
    if rescued and not left:  # every rescued record is back in the run folder: drop the empty rescue folder
        for folder in (rescue_dir(run_dir) / records.CASES_DIR, rescue_dir(run_dir)):
            with contextlib.suppress(OSError):
                folder.rmdir()
    if left:
        problems.append(f"{len(left)} record(s) could not be written to {run_dir / records.CASES_DIR} and are "
                        f"kept in {rescue_dir(run_dir)}: {', '.join(left)}")
    try:
        records.write_merged(run_dir, merged)
    except OSError as exc:
        copy = save_text(run_dir, "records.jsonl", records.jsonl_text(merged))
        problems.append(f"records.jsonl not written in {run_dir} ({describe(exc, 300)}); "
                        + (f"written to {copy}" if copy else "the records are only in this session's summary"))
    return merged, problems


def elsewhere(path: Path, fallback: Path, write: Callable, what: str) -> tuple:
    """(write(path), []); if that raises OSError, (write(fallback), [one line saying so])."""
    try:
        return write(path), []
    except OSError as exc:
        first = describe(exc, 300)
    try:
        Path(fallback).parent.mkdir(parents=True, exist_ok=True)
        return write(fallback), [f"{what} not written to {path} ({first}); written to {fallback} instead"]
    except OSError as exc:
        return None, [f"{what} not written to {path} ({first}) nor to {fallback} ({describe(exc, 300)})"]
