"""Self-describing result records: one JSON file per case, written atomically, merged by the controller.

Pure: no TensorFlow. Failed cases are records too (status + error), as asv keeps them.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import platform
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Optional

SCHEMA_VERSION = 1
STATUSES = ("passed", "failed", "error", "nan", "timeout")
CASES_DIR = "cases"

# Columns of summary.csv, in order; every record has these keys (value may be None).
SUMMARY_COLUMNS = (
    "case_id", "status", "model", "order", "n", "kind", "weight_bits", "method", "deployment",
    "tier", "seed", "strategy", "units_total", "param_fraction",
    "control_accuracy", "quant_accuracy", "quant_accuracy_keras", "accuracy_drop_pp",
    "tflite_bytes", "control_tflite_bytes", "gzip_bytes", "weight_bytes", "predicted_weight_bytes",
    "ideal_packed_bytes", "size_error_rel", "quantized_kernels", "selected_kernels",
    "qat_step_ms", "float_step_ms", "step_ratio", "wall_s", "config_hash",
)


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
    }


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
    write_text_atomic(path, json.dumps(record, indent=1, sort_keys=True, default=_jsonable))
    return path


def _jsonable(value):
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def case_path(run_dir: Path, case_id: str) -> Path:
    return Path(run_dir) / CASES_DIR / f"{case_id}.json"


def read_case_records(run_dir: Path) -> tuple:
    """(records, problems): every complete case record; temp files are never read."""
    records, problems = [], []
    folder = Path(run_dir) / CASES_DIR
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"{path.name}: unreadable ({exc})")
            continue
        if record.get("schema_version") != SCHEMA_VERSION:
            problems.append(f"{path.name}: schema {record.get('schema_version')} != {SCHEMA_VERSION}")
            continue
        records.append(record)
    return records, problems


def merge(run_dir: Path) -> tuple:
    """Write records.jsonl and summary.csv for a run folder; one line per case id."""
    run_dir = Path(run_dir)
    records, problems = read_case_records(run_dir)
    by_case = {}
    for record in records:
        known = by_case.get(record["case_id"])
        if known is None or record.get("created", "") >= known.get("created", ""):
            by_case[record["case_id"]] = record
    merged = [by_case[key] for key in sorted(by_case)]
    write_text_atomic(run_dir / "records.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in merged))
    _write_summary(run_dir / "summary.csv", merged)
    return merged, problems


def write_text_atomic(path: Path, text: str) -> None:
    """The one way files are written here: a killed process never leaves a half-written file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
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


def load_jsonl(path: Path) -> list:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]
