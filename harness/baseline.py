"""Regression gates against a saved baseline, in the spirit of pytest-benchmark's --benchmark-compare. Pure.

Key: the case id without its seed suffix ("-s<seed>", present for seed != 0), so one entry holds
the medians over seeds of accuracy_drop_pp and tflite_bytes. Only measured records (status
passed/failed) are stored. Because the config hash covers the seed, an entry keeps the hash of
every case id it was built from ({case_id: config_hash}).

compare(record, baseline):
  new        the key is not in the baseline, or this seed's case id was not part of it;
  stale      the record's config_hash differs from the baseline's for that case id (reported,
             the numbers are not compared: the configuration changed);
  regressed  the drop exceeds the baseline median by more than drop_tolerance_pp, the .tflite grew
             by more than size_tolerance_rel, or the record has no measurement (nan/error/timeout);
  ok         otherwise.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional

import numpy as np

from .fit import as_number
from .records import now_iso, write_atomic

BASELINE_FORMAT = "qatbench-baseline"
BASELINE_SCHEMA_VERSION = 1
STATUSES = ("ok", "regressed", "stale", "new")
_SEED_SUFFIX = re.compile(r"-s\d+$")


class BaselineError(ValueError):
    """A baseline file that cannot be used; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class BaselineEntry:
    key: str
    accuracy_drop_pp: Optional[float]  # median over seeds
    tflite_bytes: Optional[float]  # median over seeds
    config_hashes: Mapping = field(default_factory=dict)  # {case_id: config_hash}
    n_records: int = 0


@dataclass(frozen=True)
class Baseline:
    path: str
    created: str
    entries: Mapping  # {key: BaselineEntry}
    schema_version: int = BASELINE_SCHEMA_VERSION


@dataclass(frozen=True)
class Verdict:
    case_id: str
    key: str
    status: str  # one of STATUSES
    message: str  # one line
    accuracy_drop_pp: Optional[float] = None
    baseline_drop_pp: Optional[float] = None
    tflite_bytes: Optional[float] = None
    baseline_tflite_bytes: Optional[float] = None


def baseline_key(record: dict) -> str:
    """case_id without the seed suffix."""
    case_id = str(record.get("case_id"))
    seed = record.get("seed")
    if seed not in (None, 0) and case_id.endswith(f"-s{seed}"):
        return case_id[: -len(f"-s{seed}")]
    return case_id if seed is not None else _SEED_SUFFIX.sub("", case_id)


def _median(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def build_entries(records: Iterable[dict]) -> dict:
    groups = defaultdict(list)
    for record in records:
        if record.get("status") in ("passed", "failed") and record.get("case_id"):
            groups[baseline_key(record)].append(record)
    entries = {}
    for key in sorted(groups):
        group = groups[key]
        entries[key] = BaselineEntry(
            key=key,
            accuracy_drop_pp=_median(as_number(r.get("accuracy_drop_pp")) for r in group),
            tflite_bytes=_median(as_number(r.get("tflite_bytes")) for r in group),
            config_hashes={str(r["case_id"]): r.get("config_hash") for r in group},
            n_records=len(group),
        )
    return entries


def save_baseline(records: Iterable[dict], path) -> Baseline:
    """Write the per-key medians of measured records to ``path`` (atomically) and return them."""
    entries = build_entries(records)
    created = now_iso()
    payload = {
        "format": BASELINE_FORMAT,
        "schema_version": BASELINE_SCHEMA_VERSION,
        "created": created,
        "entries": {
            key: {"accuracy_drop_pp": e.accuracy_drop_pp, "tflite_bytes": e.tflite_bytes,
                  "config_hashes": dict(e.config_hashes), "n_records": e.n_records}
            for key, e in entries.items()
        },
    }
    write_atomic(Path(path), payload)
    return Baseline(path=str(path), created=created, entries=entries)


def _optional_number(value, where: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BaselineError(f"{where}: expected a number or null, got {value!r}")
    return float(value)


def load_baseline(path) -> Baseline:
    """Read a baseline file; BaselineError (one line) if missing, unreadable, corrupt or the wrong schema."""
    path = Path(path)
    if not path.is_file():
        raise BaselineError(f"baseline not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"baseline {path} unreadable: {exc}") from None
    except ValueError as exc:
        raise BaselineError(f"baseline {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        raise BaselineError(f"baseline {path} is not a qatbench baseline (no format={BASELINE_FORMAT!r})")
    if data.get("schema_version") != BASELINE_SCHEMA_VERSION:
        raise BaselineError(f"baseline {path} has schema version {data.get('schema_version')!r}, "
                            f"expected {BASELINE_SCHEMA_VERSION}")
    raw = data.get("entries")
    if not isinstance(raw, dict):
        raise BaselineError(f"baseline {path}: 'entries' must be an object")
    entries = {}
    for key, item in raw.items():
        where = f"baseline {path} entry {key!r}"
        if not isinstance(item, dict) or not isinstance(item.get("config_hashes"), dict):
            raise BaselineError(f"{where}: expected an object with config_hashes")
        entries[key] = BaselineEntry(
            key=key,
            accuracy_drop_pp=_optional_number(item.get("accuracy_drop_pp"), where),
            tflite_bytes=_optional_number(item.get("tflite_bytes"), where),
            config_hashes=dict(item["config_hashes"]),
            n_records=int(item.get("n_records") or 0),
        )
    return Baseline(path=str(path), created=str(data.get("created")), entries=entries)


def compare(record: dict, baseline: Baseline, drop_tolerance_pp: float, size_tolerance_rel: float = 0.01) -> Verdict:
    """Gate one record against the baseline (see the module docstring for the statuses)."""
    if drop_tolerance_pp < 0 or size_tolerance_rel < 0:
        raise ValueError("tolerances must be >= 0")
    case_id, key = str(record.get("case_id")), baseline_key(record)
    entry = baseline.entries.get(key)
    drop, size = as_number(record.get("accuracy_drop_pp")), as_number(record.get("tflite_bytes"))
    common = dict(case_id=case_id, key=key, accuracy_drop_pp=drop, tflite_bytes=size)
    if entry is None:
        return Verdict(status="new", message=f"{case_id}: not in baseline", **common)
    common.update(baseline_drop_pp=entry.accuracy_drop_pp, baseline_tflite_bytes=entry.tflite_bytes)
    if case_id not in entry.config_hashes:
        return Verdict(status="new", message=f"{case_id}: seed not in baseline entry {key}", **common)
    if entry.config_hashes[case_id] != record.get("config_hash"):
        return Verdict(status="stale", message=(f"{case_id}: config changed ({entry.config_hashes[case_id]} -> "
                                                f"{record.get('config_hash')}), not compared"), **common)
    if record.get("status") not in ("passed", "failed") or drop is None:
        return Verdict(status="regressed", message=f"{case_id}: no measurement (status {record.get('status')})",
                       **common)
    problems = []
    if entry.accuracy_drop_pp is not None and drop - entry.accuracy_drop_pp > drop_tolerance_pp:
        problems.append(f"drop {drop:.3g} pp > baseline {entry.accuracy_drop_pp:.3g} + {drop_tolerance_pp:g} pp")
    if size is not None and entry.tflite_bytes and (size - entry.tflite_bytes) / entry.tflite_bytes > size_tolerance_rel:
        growth = (size - entry.tflite_bytes) / entry.tflite_bytes
        problems.append(f"tflite {size:,.0f} B grew {growth:+.1%} > {size_tolerance_rel:.1%}")
    if problems:
        return Verdict(status="regressed", message=f"{case_id}: " + "; ".join(problems), **common)
    base_drop = "?" if entry.accuracy_drop_pp is None else f"{entry.accuracy_drop_pp:.3g}"
    return Verdict(status="ok", message=f"{case_id}: drop {drop:.3g} pp (baseline {base_drop})", **common)


def compare_all(records: Iterable[dict], baseline: Baseline, drop_tolerance_pp: float,
                size_tolerance_rel: float = 0.01) -> tuple:
    return tuple(compare(r, baseline, drop_tolerance_pp, size_tolerance_rel) for r in records)
