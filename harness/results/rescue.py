"""Nothing measured is lost at the end of a session.

- A case record the run folder refuses (read-only folder, full disk, file-size limit, a value JSON
  cannot hold, NaN or infinity, stored as null) is kept in memory by the session and copied to a rescue folder outside the results
  (``$TMPDIR/qatbench-rescue/<run-id>-<hash of its path>/``); the session end merges it like any
  record, says where it is, and writes it back into the run folder once the folder accepts it.
- The rescue folder sits in a shared, predictable place, so what is found there is not trusted: each
  copy is bound to its run by a random key kept in the run folder (``RUN/.rescue-key``) and named
  ``<case id>.<key>.json``; a copy is applied only if its key matches, its name matches its case id
  and ``RUN/cases/`` lacks that case, and it is deleted only after it was applied. Anything else is
  one line naming the file.
- SIGTERM (what Slurm and Kubernetes send) ends a session like Ctrl-C: it raises KeyboardInterrupt,
  the current case is recorded as ``interrupted``, the records are merged and the report written.
  A SIGTERM during the session end is ignored so the report can still be written.

Pure Python, no TensorFlow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
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
    return _finite_or_none(json.loads(json.dumps(record, default=fallback)))


def _finite_or_none(value):
    """NaN and infinities become null: JSON has neither, and readers refuse records holding them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(item) for item in value]
    return value


KEY_FILE = ".rescue-key"
_KEY = re.compile(r"[0-9a-f]{32}")
UNBOUND = "unbound"  # the key part of a copy whose run folder could not hold a key: never applied


def run_key(run_dir: Path, create: bool = False) -> Optional[str]:
    """The run's rescue key (``RUN/.rescue-key``); with ``create``, made if absent (first writer wins,
    so every process of a run agrees). None if there is none and it cannot be made."""
    path = Path(run_dir) / KEY_FILE
    try:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            return None  # never follow a planted link
        if path.exists():
            text = path.read_text()[:64].strip()
            return text if _KEY.fullmatch(text) else None
        if not create:
            return None
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{KEY_FILE}.", suffix=".tmp", dir=run_dir)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(16) + "\n")
        try:
            os.link(tmp, path)  # fails if another process made the key first: then that one is read
        except FileExistsError:
            pass
        finally:
            Path(tmp).unlink(missing_ok=True)
        return run_key(run_dir)
    except (OSError, UnicodeDecodeError):
        return None


def _own_folder(folder: Path) -> Path:
    """``folder``, made (0700) if absent; OSError if it is a link or another user's (a shared /tmp)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.is_symlink() or not folder.is_dir() or folder.lstat().st_uid != os.getuid():
        raise PermissionError(f"rescue folder {folder} is a link or not this user's: not used")
    return folder


def rescue_file(run_dir: Path, case_id: str, key: Optional[str]) -> Path:
    """RESCUE/cases/<case_id>.<key>.json, checked to lie in that folder (ValueError otherwise)."""
    name = f"{records.check_case_id(case_id)}.{key or UNBOUND}.json"
    return records.inside(rescue_dir(run_dir) / records.CASES_DIR, name)


def save_record(run_dir: Path, record: dict) -> Optional[Path]:
    """Copy a record to the rescue folder, bound to the run's key; None if that fails too."""
    try:
        path = rescue_file(run_dir, record["case_id"], run_key(run_dir, create=True))
        _own_folder(rescue_dir(run_dir))
        _own_folder(path.parent)
        return records.write_atomic(path, plain(record))
    except (OSError, TypeError, ValueError, KeyError):
        return None


def save_text(run_dir: Path, name: str, text: str) -> Optional[Path]:
    try:
        path = records.inside(_own_folder(rescue_dir(run_dir)), name)
        records.write_text_atomic(path, text)
        return path
    except (OSError, ValueError):
        return None


def pending(run_dir: Path) -> bool:
    """Does the rescue folder of ``run_dir`` hold records not yet back in the run folder?"""
    return any((rescue_dir(run_dir) / records.CASES_DIR).glob("*.json"))


def _bound(run_dir: Path, path: Path, key: Optional[str], skip) -> tuple:
    """(record, None) if the rescue copy ``path`` may be applied to ``run_dir``, else (None, why or None)."""
    case_id, _, tag = path.name[: -len(".json")].partition(".")
    if key is None or tag != key:
        return None, "not bound to this run (its key is not the one in the run folder's .rescue-key)"
    if case_id in skip:  # this session's own record, held in memory: the copy is applied with it
        return None, None
    try:
        record = records.read_case_record(path)
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({' '.join(str(exc).split())[:200]})"
    if record["case_id"] != case_id:
        return None, f"its case id {record['case_id']!r} is not the one in its name"
    if records.case_path(run_dir, case_id).exists():
        return None, f"{records.CASES_DIR}/{case_id}.json already holds that case (a measured record is never replaced)"
    return record, None


def rescued_records(run_dir: Path, skip=()) -> tuple:
    """([(path, record)], problems): the rescue copies of ``run_dir`` that may be applied to it (see the
    module doc); each other file there is one problem line naming it. ``skip``: case ids held in memory."""
    folder = rescue_dir(run_dir) / records.CASES_DIR
    if not folder.is_dir():
        return [], []
    key, found, problems = run_key(run_dir), [], []
    for path in sorted(folder.glob("*.json")):
        record, why = _bound(run_dir, path, key, set(skip))
        if record is not None:
            found.append((path, record))
        elif why:
            problems.append(f"rescue file {path}: {why}; not applied, left as it is")
    return found, problems


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


def _restore(run_dir: Path, record: dict, copy: Optional[Path]) -> bool:
    """Put a record the run folder refused earlier back into it (the folder healed); its rescue copy
    is deleted only once the record is in the run folder."""
    try:
        records.write_atomic(records.case_path(run_dir, record["case_id"]), record)
    except (OSError, TypeError, ValueError):
        return False
    if copy is not None:
        with contextlib.suppress(OSError):
            copy.unlink(missing_ok=True)
    return True


def _kept(run_dir: Path, record: dict, copy: Optional[Path]) -> Optional[Path]:
    """The rescue copy of a record that stays out of the run folder, verified on disk (made if absent)."""
    if copy is not None and copy.is_file():
        return copy
    return save_record(run_dir, record)


def merge_run(run_dir: Path, unwritten=()) -> tuple:
    """(merged, problems) of a run folder plus the records it refused (``unwritten``, in memory, and the
    rescue folder's); those are written back when the folder accepts them again. The merged list is
    returned even when records.jsonl cannot be written (it then goes to the rescue folder)."""
    run_dir = Path(run_dir)
    unwritten = list(unwritten)
    rescued, problems = rescued_records(run_dir, skip={r.get("case_id") for r in unwritten})
    key = run_key(run_dir)
    copies = {id(r): _copy_of(run_dir, r, key) for r in unwritten}
    copies.update({id(r): path for path, r in rescued})
    merged, found = records.collect(run_dir, extra=unwritten + [r for _, r in rescued])
    problems = found + problems
    left = [r for r in merged if id(r) in copies and not _restore(run_dir, r, copies[id(r)])]
    if rescued and not left:  # every rescued record is back in the run folder: drop the empty rescue folder
        for folder in (rescue_dir(run_dir) / records.CASES_DIR, rescue_dir(run_dir)):
            with contextlib.suppress(OSError):
                folder.rmdir()
    kept = [r["case_id"] for r in left if _kept(run_dir, r, copies[id(r)])]
    lost = [r["case_id"] for r in left if r["case_id"] not in kept]
    if kept:
        problems.append(f"{len(kept)} record(s) could not be written to {run_dir / records.CASES_DIR} and are "
                        f"kept in {rescue_dir(run_dir)}: {', '.join(kept)}")
    if lost:
        problems.append(f"{len(lost)} record(s) could be written neither to {run_dir / records.CASES_DIR} nor to "
                        f"{rescue_dir(run_dir)}: only in this session's records.jsonl and summary: {', '.join(lost)}")
    try:
        records.write_merged(run_dir, merged)
    except OSError as exc:
        copy = save_text(run_dir, "records.jsonl", records.jsonl_text(merged))
        problems.append(f"records.jsonl not written in {run_dir} ({describe(exc, 300)}); "
                        + (f"written to {copy}" if copy else "the records are only in this session's summary"))
    return merged, problems


def _copy_of(run_dir: Path, record: dict, key: Optional[str]) -> Optional[Path]:
    try:
        return rescue_file(run_dir, record["case_id"], key)
    except (KeyError, ValueError):
        return None


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
