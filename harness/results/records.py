"""Self-describing result records: one JSON file per case, written atomically, merged by the controller.

Pure: no TensorFlow. Failed cases are records too (status + error), as asv keeps them.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import os
import platform
import re
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from harness.results import schema

SCHEMA_VERSION = schema.VERSION  # the schema is declared in harness/results/schema.py
STATUSES = ("passed", "failed", "error", "nan", "timeout", "interrupted")
MEASURED = ("passed", "failed")  # statuses that carry measurements (a failed case broke a threshold)
CASES_DIR = "cases"

# Columns of summary.csv, in order; every record has these keys (value may be None).
SUMMARY_COLUMNS = (
    "case_id", "status", "model", "order", "n", "kind", "weight_bits", "method", "deployment",
    "tier", "seed", "strategy", "units_total", "param_fraction",
    "control_accuracy", "quant_accuracy", "quant_accuracy_keras", "accuracy_drop_pp",
    "tflite_bytes", "control_tflite_bytes", "gzip_bytes", "weight_bytes", "predicted_weight_bytes",
    "ideal_packed_bytes", "size_error_rel", "quantized_kernels", "selected_kernels",
    "qat_step_ms", "float_step_ms", "step_ratio", "wall_s", "config_hash",
    "n_test", "drop_ci95_pp", "mcnemar_p", "drop_within_noise",
)

# Fields added by each schema version; a record of an older version is migrated by adding them
# as None (unknown: that version did not measure them), so readers see one shape.
ADDED_IN = schema.added_in()


class RecordError(ValueError):
    """A case record that cannot be used (not an object, no case id, unknown schema); one line."""


def upgrade(record) -> dict:
    """The record in the current schema: older versions migrated (see ADDED_IN), others refused."""
    if not isinstance(record, dict):
        raise RecordError(f"not a JSON object ({type(record).__name__})")
    if not isinstance(record.get("case_id"), str) or not record["case_id"]:
        raise RecordError("no case_id")
    if not CASE_ID.fullmatch(record["case_id"]):  # it becomes a file name: never a path
        raise RecordError(f"case_id {record['case_id'][:80]!r} is not a plain case id")
    version = record.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise RecordError(f"schema {version!r} unknown (this code reads 1..{SCHEMA_VERSION})")
    if version == SCHEMA_VERSION:
        return record
    upgraded = dict(record)
    for step in range(version + 1, SCHEMA_VERSION + 1):
        for name in ADDED_IN.get(step, ()):
            upgraded.setdefault(name, None)
    upgraded["schema_version"] = SCHEMA_VERSION
    upgraded["migrated_from"] = version
    return upgraded


def git_commit(cwd: Optional[str] = None) -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def machine() -> dict:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "cpu": cpu(),
    }


# The ISA features that decide which int8/float kernels oneDNN and XNNPACK pick (accuracies and
# speed ratios differ between CPU kinds, so every record says which one produced it).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def cpu(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """CPU model name and the int8-relevant ISA flags (empty values where /proc/cpuinfo is absent)."""
    model, flags = platform.processor() or "", set()
    try:
        with open(cpuinfo) as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags]}


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}"


def base_record(case_id: str, config_hash: str, fields: dict, env: dict) -> dict:
    """A record with every summary column present; measured values are filled in later."""
    record = {column: None for column in SUMMARY_COLUMNS}
    record.update(fields)
    record.update(
        schema_version=SCHEMA_VERSION,
        case_id=case_id,
        config_hash=config_hash,
        status=fields.get("status", "error"),
        error=fields.get("error"),
        created=now_iso(),
        env=env,
    )
    return record


def write_atomic(path: Path, record: dict) -> Path:
    """Write a record as JSON: temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: NaN/inf are refused at write (ValueError), as readers refuse them (schema.value_problem)
    write_text_atomic(path, json.dumps(record, indent=1, sort_keys=True, default=_jsonable, allow_nan=False))
    return path


def _jsonable(value):
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) > 0:  # numpy array
        return value.tolist()
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# What a case id may be (the grid makes e.g. mlp-last3-w8a8, cnn-first1-w8a8-ptq, mlp-mixed-b150k,
# my_model-single2-w4a8-s3): ids become file names, and ids read back from records or rescue files
# are not trusted, so no separators, dots (no ".."), NUL or other characters a path could use.
CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,199}")


def check_case_id(case_id) -> str:
    """``case_id`` if it is a plain case id, else ValueError (one line): the one check for every source."""
    if not isinstance(case_id, str) or not CASE_ID.fullmatch(case_id):
        raise ValueError(f"case id {str(case_id)[:80]!r} is not a plain case id (letters, digits, _ and -, "
                         "1..200 characters, starting with a letter or digit)")
    return case_id


def inside(folder: Path, name: str) -> Path:
    """``folder / name`` after checking that, resolved (symlinks followed), it lies directly in ``folder``:
    every file qatbench writes or deletes under a run or rescue folder goes through here."""
    folder = Path(folder)
    path = folder / name
    if Path(name).name != name or name in ("", ".", "..") or "\0" in name:
        raise ValueError(f"{name[:80]!r} is not a plain file name")
    if path.resolve().parent != folder.resolve():
        raise ValueError(f"{path} resolves to {path.resolve()}, outside {folder}")
    return path


def case_path(run_dir: Path, case_id: str, suffix: str = ".json") -> Path:
    """RUN/cases/<case_id><suffix> (the record, its predictions, its .tflite); ValueError if the case id
    is not plain or the path leaves the folder."""
    return inside(Path(run_dir) / CASES_DIR, f"{check_case_id(case_id)}{suffix}")


def write_case_file(run_dir: Path, case_id: str, suffix: str, content: bytes) -> Path:
    """A file beside a case's record, written atomically (cases/ made if needed)."""
    path = case_path(run_dir, case_id, suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, content)
    return path


PREDICTIONS_SUFFIX = ".predictions.npz"
PREDICTION_ARRAYS = ("y_true", "control", "quant")
# Per example, how many classes share the top score and whether the true class is among them (tie-aware
# accuracy, harness/case/paired.py); absent from files written before schema 6.
TIE_ARRAYS = ("control_top_size", "quant_top_size", "control_top_hit", "quant_top_hit")


def write_predictions(run_dir: Path, case_id: str, predictions: dict) -> dict:
    """Store a case's predicted labels (y_true, control, quant) beside its record as a compressed
    .npz of small unsigned integers (atomic). Returns the record fields that point to it."""
    arrays = {}
    for name in PREDICTION_ARRAYS + tuple(n for n in TIE_ARRAYS if n in predictions):
        values = np.asarray(predictions[name]).reshape(-1)
        arrays[name] = values.astype(np.uint8 if values.max(initial=0) < 256 else np.uint32)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    content = buffer.getvalue()
    path = write_case_file(run_dir, case_id, PREDICTIONS_SUFFIX, content)
    return {"predictions_file": path.name, "predictions_sha256": hashlib.sha256(content).hexdigest()}


def read_predictions(run_dir: Path, record: dict) -> dict:
    """The predicted labels of a record, checked against its checksum (no pickle: allow_pickle=False)."""
    expected = f"{check_case_id(record.get('case_id'))}{PREDICTIONS_SUFFIX}"
    if record.get("predictions_file") != expected:  # a record names no other file than its own
        raise RecordError(f"{record['case_id']}: predictions_file {str(record.get('predictions_file'))[:80]!r} "
                          f"is not {expected}")
    path = inside(Path(run_dir) / CASES_DIR, expected)
    content = path.read_bytes()
    if hashlib.sha256(content).hexdigest() != record.get("predictions_sha256"):
        raise RecordError(f"{path.name}: checksum does not match its record")
    with np.load(io.BytesIO(content), allow_pickle=False) as data:
        return {**{name: data[name] for name in PREDICTION_ARRAYS},
                **{name: data[name] for name in TIE_ARRAYS if name in data.files}}


def usable(record) -> dict:
    """``upgrade(record)``, then the field types and ranges of the one declared schema that readers rely
    on; RecordError names the first bad one."""
    record = upgrade(record)
    if record.get("status") not in STATUSES:
        raise RecordError(f"status {record.get('status')!r} unknown")
    problem = schema.value_problem(record)  # declared types, ranges, NaN/inf anywhere (harness/results/schema.py)
    if problem:
        raise RecordError(problem)
    return record


def _note(where: str, exc: Exception) -> str:
    return f"{where}: skipped, unreadable ({' '.join(str(exc).split())[:200] or type(exc).__name__})"


MAX_FILE_BYTES = 64 * 2 ** 20  # records, records.jsonl and baselines above this are refused before reading


def read_bounded(path: Path, limit: int = MAX_FILE_BYTES) -> str:
    """The text of a regular file of at most ``limit`` bytes: a FIFO or device is not opened (it could
    block or never end), a larger file is refused before it is read (OSError/ValueError, one line)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path.name} is not a regular file")
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise ValueError(f"{path.name} is {size:,} bytes, over the {limit:,}-byte limit for a results file")
        return handle.read(limit + 1).decode()


def read_case_record(path: Path) -> dict:
    """One case record file, checked (OSError, ValueError or RecordError otherwise)."""
    return usable(json.loads(read_bounded(path)))


def read_case_records(run_dir: Path) -> tuple:
    """(records, problems): every usable case record; temp files are never read; a malformed or
    unknown-schema record is skipped with a one-line note (old schemas are migrated by upgrade)."""
    records, problems = [], []
    folder = Path(run_dir) / CASES_DIR
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            records.append(read_case_record(path))
        except (OSError, ValueError) as exc:  # RecordError and JSON errors are ValueErrors
            problems.append(_note(f"{CASES_DIR}/{path.name}", exc))
    return records, problems


def newest_per_case(records: Iterable[dict]) -> list:
    """One record per case id, the most recently created, sorted by case id."""
    by_case = {}
    for record in records:
        known = by_case.get(record["case_id"])
        if known is None or str(record.get("created") or "") >= str(known.get("created") or ""):
            by_case[record["case_id"]] = record
    return [by_case[key] for key in sorted(by_case)]


def collect(run_dir: Path, extra: Iterable[dict] = ()) -> tuple:
    """(merged, problems) of a run folder without writing anything; ``extra``: records held in memory
    (a case whose record could not be written) that take part like files."""
    records, problems = read_case_records(run_dir)
    return newest_per_case(records + list(extra)), problems


def jsonl_text(merged: list) -> str:
    return "".join(json.dumps(r, sort_keys=True, default=_jsonable) + "\n" for r in merged)


def write_merged(run_dir: Path, merged: list) -> None:
    write_text_atomic(Path(run_dir) / "records.jsonl", jsonl_text(merged))
    _write_summary(Path(run_dir) / "summary.csv", merged)


def write_text_atomic(path: Path, text: str) -> None:
    """The one way files are written here: a killed process never leaves a half-written file."""
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, content: bytes) -> None:
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_file()):  # never replace a link, device or FIFO
        raise OSError(f"{path} is a link or a special file; qatbench replaces only regular files")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_summary(path: Path, records: Iterable[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    write_text_atomic(path, buffer.getvalue())


def load_jsonl(path: Path, problems: Optional[list] = None) -> list:
    """The usable records of a .jsonl file; a malformed line (a truncated last line, a record that is
    not an object, an unknown schema) is skipped with a one-line note appended to ``problems``."""
    out = []
    for number, line in enumerate(read_bounded(path).splitlines(), 1):  # bounded: at most MAX_FILE_BYTES
        if not line.strip():
            continue
        try:
            out.append(usable(json.loads(line)))
        except ValueError as exc:
            if problems is not None:
                problems.append(_note(f"{Path(path).name} line {number}", exc))
    return out
