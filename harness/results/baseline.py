"""The baseline file: per-seed results of a saved run and its noise estimate. Pure.

In the spirit of pytest-benchmark's --benchmark-save/--benchmark-compare, with asv's versioned
schema. Key: the case id without its seed suffix ("-s<seed>", present for seed != 0); an entry
holds one value per seed (drop, control and quantized accuracy, bytes, config hash). The noise
estimate is the pooled within-key standard deviation of the drop across seeds, per (model, bit
width): seeds are the unit of replication, and a seed changes the fine-tuning of both the control
and the quantized model, so this SD contains the seed effect, the run-to-run numerics and the
test-set sampling error. harness/results/baseline_gate.py compares a run against it.

Schema 1 files (medians only) are migrated on load: each seed gets the entry's median and the
noise is unknown, which the gate reports. Each seed also keeps its batch-1 latency ratio
quantized/control with its interval (harness/case/latency.py), for the latency gate
(harness/results/latency_gate.py); schema-2 files saved before it have none, and are not latency-gated.
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

from harness.results import machines
from harness.results.records import MEASURED, now_iso, read_bounded, write_atomic
from harness.results.seedstats import as_number

BASELINE_FORMAT = "qatbench-baseline"
BASELINE_SCHEMA_VERSION = 2
_SEED_SUFFIX = re.compile(r"-s\d+$")


class BaselineError(ValueError):
    """A baseline file that cannot be used; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class SeedValue:
    case_id: str
    config_hash: Optional[str]
    drop_pp: Optional[float]
    control_accuracy: Optional[float] = None
    quant_accuracy: Optional[float] = None
    tflite_bytes: Optional[float] = None
    n_test: Optional[int] = None
    # batch-1 LiteRT latency quantized/control and its per-case 95% interval (None: not timed, older files)
    latency_ratio: Optional[float] = None
    latency_low: Optional[float] = None
    latency_high: Optional[float] = None


@dataclass(frozen=True)
class BaselineEntry:
    key: str
    model: Optional[str]
    weight_bits: Optional[int]
    n: Optional[int]
    seeds: Mapping  # {seed: SeedValue}

    def by_case_id(self) -> dict:
        return {value.case_id: value for value in self.seeds.values()}


@dataclass(frozen=True)
class Noise:
    """Noise of the drop in one (model, bit width) group, in pp: the pooled within-key SD across
    seeds (df), split into the shift that a seed gives every key alike (seed_sd_pp: the float
    control is shared by every N of a seed) and the per-case rest (case_sd_pp)."""

    sd_pp: Optional[float]
    df: int
    seed_sd_pp: Optional[float] = None
    case_sd_pp: Optional[float] = None


@dataclass(frozen=True)
class Baseline:
    path: str
    created: str
    entries: Mapping  # {key: BaselineEntry}
    noise: Mapping = field(default_factory=dict)  # {noise_group: Noise}
    tier: Optional[str] = None
    machine: Mapping = field(default_factory=dict)
    schema_version: int = BASELINE_SCHEMA_VERSION
    migrated_from: Optional[int] = None
    # optional (absent in files saved before them): the library versions of the saved run ({}: the gate
    # compares machines on the CPU kind and Python alone), and {model: cross-machine spread}
    # (harness/results/machines.py; {}: a shift on another machine is reported, not failed)
    versions: Mapping = field(default_factory=dict)
    machine_spread: Mapping = field(default_factory=dict)


def baseline_key(record: dict) -> str:
    """case_id without the seed suffix."""
    case_id = str(record.get("case_id"))
    seed = record.get("seed")
    if seed not in (None, 0) and case_id.endswith(f"-s{seed}"):
        return case_id[: -len(f"-s{seed}")]
    return case_id if seed is not None else _SEED_SUFFIX.sub("", case_id)


def noise_group(model, weight_bits) -> str:
    return f"{model}/w{weight_bits}"




def sum_of_squares(entries: Iterable[BaselineEntry]) -> dict:
    """{noise_group: (within-key sum of squares of the drop, degrees of freedom)}.

    Keys with N = 0 are left out: their quantized model is the control, so their drop is 0 by
    construction and would shrink the noise estimate."""
    pooled = defaultdict(lambda: [0.0, 0])
    for entry in entries:
        drops = [v.drop_pp for v in entry.seeds.values() if v.drop_pp is not None]
        if entry.n == 0 or len(drops) < 2:
            continue
        group = pooled[noise_group(entry.model, entry.weight_bits)]
        group[0] += float(np.sum((np.array(drops) - np.mean(drops)) ** 2))
        group[1] += len(drops) - 1
    return {name: (ss, df) for name, (ss, df) in pooled.items()}


def two_way(x: np.ndarray) -> tuple:
    """(residual SS, its df, SS of the seed means, its df) of a keys x seeds table of drops."""
    keys, seeds = x.shape
    row, col, grand = x.mean(axis=1, keepdims=True), x.mean(axis=0, keepdims=True), x.mean()
    return (float(np.sum((x - row - col + grand) ** 2)), (keys - 1) * (seeds - 1),
            float(np.sum((col - grand) ** 2)), seeds - 1)


def complete_table(entries: Iterable[BaselineEntry]) -> tuple:
    """(keys, seeds, keys x seeds drops) over the seeds every N > 0 key of the group measured."""
    usable = [e for e in entries if e.n != 0]
    if not usable:
        return [], (), np.zeros((0, 0))
    seeds = sorted(set.intersection(*[{s for s, v in e.seeds.items() if v.drop_pp is not None} for e in usable]))
    table = np.array([[e.seeds[s].drop_pp for s in seeds] for e in usable], float).reshape(len(usable), len(seeds))
    return [e.key for e in usable], tuple(seeds), table


def _split(entries: list) -> tuple:
    """(seed_sd, case_sd) from the group's complete key x seed table: the residual variance is the
    per-case noise; the variance of seed means, less its per-case share, the seed shift."""
    keys, seeds, table = complete_table(entries)
    if table.shape[0] < 2 or table.shape[1] < 2:
        return None, None
    residual, df, seed_means, seed_df = two_way(table)
    case_var = residual / df
    seed_var = max(0.0, seed_means / seed_df - case_var / table.shape[0])
    return math.sqrt(seed_var), math.sqrt(case_var)


def pooled_noise(entries: Iterable[BaselineEntry]) -> dict:
    entries = list(entries)
    groups = defaultdict(list)
    for entry in entries:
        groups[noise_group(entry.model, entry.weight_bits)].append(entry)
    return {name: Noise(math.sqrt(ss / df) if df else None, df, *_split(groups[name]))
            for name, (ss, df) in sum_of_squares(entries).items()}


def entries_from_records(records: Iterable[dict]) -> dict:
    """{key: BaselineEntry} of the measured records (status passed/failed)."""
    groups = defaultdict(dict)
    meta = {}
    for record in records:
        if record.get("status") not in MEASURED or not record.get("case_id"):
            continue
        key = baseline_key(record)
        seed = int(record.get("seed") or 0)
        groups[key][seed] = SeedValue(
            case_id=str(record["case_id"]), config_hash=record.get("config_hash"),
            drop_pp=as_number(record.get("accuracy_drop_pp")),
            control_accuracy=as_number(record.get("control_accuracy")),
            quant_accuracy=as_number(record.get("quant_accuracy")),
            tflite_bytes=as_number(record.get("tflite_bytes")), n_test=record.get("n_test"),
            **_latency_of(record))
        meta[key] = (record.get("model"), record.get("weight_bits"), record.get("n"))
    return {key: BaselineEntry(key, *meta[key], seeds=dict(sorted(groups[key].items()))) for key in sorted(groups)}


def _latency_of(record: dict) -> dict:
    interval = list(record.get("latency_ratio_ci95") or ()) + [None, None]
    return {"latency_ratio": as_number(record.get("latency_ratio")), "latency_low": as_number(interval[0]),
            "latency_high": as_number(interval[1])}


def save_baseline(records: Iterable[dict], path, *, tier: Optional[str] = None, machine: Optional[dict] = None) -> Baseline:
    """Write the per-seed values of the measured records and their noise to ``path`` (atomically)."""
    records = list(records)
    entries = entries_from_records(records)
    noise = pooled_noise(entries.values())
    created = now_iso()
    versions = machines.versions_of(records)
    payload = {
        "format": BASELINE_FORMAT, "schema_version": BASELINE_SCHEMA_VERSION, "created": created,
        "tier": tier, "machine": machine or {}, "versions": versions,
        "noise": {name: vars(n) for name, n in sorted(noise.items())},
        "entries": {key: {"model": e.model, "weight_bits": e.weight_bits, "n": e.n,
                          "seeds": {str(seed): vars(value) for seed, value in e.seeds.items()}}
                    for key, e in entries.items()},
    }
    write_atomic(Path(path), payload)
    return Baseline(path=str(path), created=created, entries=entries, noise=noise, tier=tier, machine=machine or {},
                    versions=versions, machine_spread=_spread_beside(Path(path), {}))


def _optional_number(value, where: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BaselineError(f"{where}: expected a number or null, got {value!r}")
    return float(value)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise BaselineError(f"baseline not found: {path}")
    try:
        data = json.loads(read_bounded(path))  # at most records.MAX_FILE_BYTES: refused before reading
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"baseline {path} unreadable: {exc}") from None
    except ValueError as exc:
        raise BaselineError(f"baseline {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        raise BaselineError(f"baseline {path} is not a qatbench baseline (no format={BASELINE_FORMAT!r})")
    if isinstance(data.get("schema_version"), bool) or data.get("schema_version") not in (1, BASELINE_SCHEMA_VERSION):
        raise BaselineError(f"baseline {path} has schema version {data.get('schema_version')!r}, "
                            f"this code reads 1 and {BASELINE_SCHEMA_VERSION}")
    if not isinstance(data.get("entries"), dict):
        raise BaselineError(f"baseline {path}: 'entries' must be an object")
    return data


def _key_parts(key: str) -> tuple:
    """(model, weight_bits, n) parsed from a case id such as 'cnn-last3-w4a8' (schema-1 files)."""
    match = re.match(r"^(?P<model>.+?)-(?:last|first|single)(?P<n>\d+)-w(?P<bits>\d+)a\d+", key)
    if not match:
        return key.split("-")[0], None, None
    return match["model"], int(match["bits"]), int(match["n"])


def _migrate_v1(entries: dict, where: str) -> dict:
    """Schema 1 kept the median over seeds only: every seed of an entry gets that median."""
    out = {}
    for key, item in entries.items():
        if not isinstance(item, dict) or not isinstance(item.get("config_hashes"), dict):
            raise BaselineError(f"{where} entry {key!r}: expected an object with config_hashes")
        drop = _optional_number(item.get("accuracy_drop_pp"), f"{where} entry {key!r}")
        size = _optional_number(item.get("tflite_bytes"), f"{where} entry {key!r}")
        seeds = {}
        for case_id, config_hash in item["config_hashes"].items():
            suffix = re.search(r"-s(\d+)$", case_id)
            seeds[int(suffix.group(1)) if suffix and case_id != key else 0] = SeedValue(
                case_id, config_hash, drop, tflite_bytes=size)
        out[key] = {"model": _key_parts(key)[0], "weight_bits": _key_parts(key)[1], "n": _key_parts(key)[2],
                    "seeds": seeds}
    return out


def _entry(key: str, item, where: str) -> BaselineEntry:
    if not isinstance(item, dict) or not isinstance(item.get("seeds"), dict):
        raise BaselineError(f"{where} entry {key!r}: expected an object with seeds")
    seeds = {}
    for seed, value in item["seeds"].items():
        if isinstance(value, SeedValue):
            seeds[int(seed)] = value
            continue
        if not isinstance(value, dict) or not isinstance(value.get("case_id"), str):
            raise BaselineError(f"{where} entry {key!r} seed {seed!r}: expected an object with case_id")
        numbers = {name: _optional_number(value.get(name), f"{where} entry {key!r}")
                   for name in ("drop_pp", "control_accuracy", "quant_accuracy", "tflite_bytes", "latency_ratio",
                                "latency_low", "latency_high")}
        seeds[int(seed)] = SeedValue(value["case_id"], value.get("config_hash"), n_test=value.get("n_test"), **numbers)
    return BaselineEntry(key, item.get("model"), item.get("weight_bits"), item.get("n"), seeds)


# What a value must be for the gate to mean anything (a 0 or negative size would turn the size gate off).
_SEED_RANGES = {"drop_pp": (-100.0, 100.0), "control_accuracy": (0.0, 1.0), "quant_accuracy": (0.0, 1.0),
                "tflite_bytes": (1.0, 1e15)}


def _check_entry(entry: BaselineEntry, where: str) -> None:
    """BaselineError (one line) for a value of the wrong type or outside its range."""
    def bad(what, value):
        raise BaselineError(f"{where} entry {entry.key!r}: {what}, got {value!r}"[:300])

    if entry.model is not None and not isinstance(entry.model, str):
        bad("model must be text", entry.model)
    bits = entry.weight_bits
    if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8):
        bad("weight_bits must be an integer in 2..8", bits)
    if entry.n is not None and (isinstance(entry.n, bool) or not isinstance(entry.n, int) or entry.n < 0):
        bad("n must be an integer >= 0", entry.n)
    for value in entry.seeds.values():
        n_test = value.n_test
        if n_test is not None and (isinstance(n_test, bool) or not isinstance(n_test, int) or n_test < 1):
            bad("n_test must be an integer > 0", n_test)
        if value.config_hash is not None and not isinstance(value.config_hash, str):
            bad("config_hash must be text", value.config_hash)
        for name, (low, high) in _SEED_RANGES.items():
            number = getattr(value, name)
            if number is not None and not low <= number <= high:
                bad(f"{name} of {value.case_id} must be in {low:g}..{high:g}", number)


def load_baseline(path) -> Baseline:
    """Read a baseline file; BaselineError (one line) if missing, unreadable, corrupt or of an unknown schema."""
    path = Path(path)
    data = _read_json(path)
    where = f"baseline {path}"
    version = data["schema_version"]
    raw = _migrate_v1(data["entries"], where) if version == 1 else data["entries"]
    try:
        entries = {key: _entry(key, item, where) for key, item in raw.items()}
    except (TypeError, ValueError) as exc:
        raise BaselineError(f"{where}: {exc}") from None
    for entry in entries.values():
        _check_entry(entry, where)
    noise = {}
    if not isinstance(data.get("noise") or {}, dict):
        raise BaselineError(f"{where}: 'noise' must be an object")
    for name, item in (data.get("noise") or {}).items():
        if not isinstance(item, dict):
            raise BaselineError(f"{where} noise {name!r}: expected an object")
        numbers = {field: _optional_number(item.get(field), f"{where} noise {name!r}")
                   for field in ("sd_pp", "seed_sd_pp", "case_sd_pp")}
        df = item.get("df") or 0
        if isinstance(df, bool) or not isinstance(df, int) or df < 0 or any((v or 0) < 0 for v in numbers.values()):
            raise BaselineError(f"{where} noise {name!r}: df must be an integer >= 0 and the SDs >= 0, got {item!r}"[:300])
        noise[name] = Noise(df=df, **numbers)
    versions = data.get("versions") or {}
    if not isinstance(versions, dict) or not all(isinstance(v, str) for v in versions.values()):
        raise BaselineError(f"{where}: 'versions' must be an object of version strings")
    return Baseline(path=str(path), created=str(data.get("created")), entries=entries, noise=noise,
                    tier=data.get("tier"), machine=data.get("machine") or {},
                    migrated_from=1 if version == 1 else None, versions=versions,
                    machine_spread=_spread_beside(path, data))


def _spread_beside(path: Path, data: dict) -> dict:
    """The baseline's own "machine_spread" (an optional object in the spread file's format), else the
    spread file in the baseline's folder, else {}."""
    where = f"baseline {path}"
    try:
        if data.get("machine_spread") is not None:
            return machines.check_spread(data["machine_spread"], where)
        return machines.load_spread(path.parent / machines.SPREAD_FILE)
    except (OSError, ValueError) as exc:
        raise BaselineError(f"{where}: machine spread unusable: {exc}") from None
