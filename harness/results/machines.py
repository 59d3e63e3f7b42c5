"""Which machine a run and a baseline ran on, and how far a change of machine moves a model's drops. Pure.

The same code and seeds on another CPU kind (other int8/float kernels: VNNI, AMX, oneDNN's choices) or
with other library versions can move every drop of a model alike; the regression gate must not read that
as a code regression, nor excuse a code regression as a machine. So:

- the gate compares the run's machine (CPU model and the int8-relevant ISA flags of records.cpu(), from
  each record's env; and the library versions of env.versions with the Python version) with the
  baseline's, and names both in one line when they differ. A baseline that does not record its library
  versions (saved before they were stored) is compared on the CPU kind and the Python version alone;
- the **cross-machine spread** of a model is the largest absolute model-wide mean shift of its drop
  measured between runs of the same configurations (same config hash, same seeds) on different machines:
  ``python -m harness spread A B ... --save results/baselines/machine-spread.json`` (A, B: baseline
  files or run folders). The gate tests a model's shift on another machine against it
  (harness/results/gate_stats.py); a model without a measured spread is reported, never failed, there.
"""

from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path
from typing import Iterable, Mapping, Optional

from harness.results.records import now_iso, read_bounded, write_atomic

SPREAD_FORMAT = "qatbench-machine-spread"
SPREAD_FILE = "machine-spread.json"  # read from the baseline's folder when the baseline holds no spread


def machine_kind(machine) -> Optional[tuple]:
    """(CPU model, ISA flags) of a records.machine() dict; None when it does not say."""
    cpu = (machine or {}).get("cpu") if isinstance(machine, dict) else None
    if not isinstance(cpu, dict) or not cpu.get("model"):
        return None
    return str(cpu["model"]), tuple(sorted(str(f) for f in cpu.get("flags") or ()))


def describe_kind(kind: Optional[tuple]) -> str:
    return "an unknown CPU" if kind is None else f"{kind[0]} [{' '.join(kind[1]) or 'no int8 ISA flags'}]"


# The numerics settings of env.numerics (TF_ENABLE_ONEDNN_OPTS, the fake-quant kernels) change rounding the
# way another CPU does, so they name the software beside the library versions, as "numerics.<name>": a
# oneDNN-off run is then another machine to the gate, and spread() measures how far it moves the drops.
NUMERICS_PREFIX = "numerics."


def versions_of(records: Iterable[dict]) -> dict:
    """The library versions and numerics settings every record with an env agrees on ({} when none says,
    or they disagree)."""
    seen = {json.dumps(_software_of_env(env), sort_keys=True) for env in
            (r.get("env") for r in records) if isinstance(env, dict) and env.get("versions")}
    return json.loads(seen.pop()) if len(seen) == 1 else {}


def _software_of_env(env: Mapping) -> dict:
    out = dict(env.get("versions") or {})
    numerics = env.get("numerics")
    if isinstance(numerics, Mapping):
        out.update({NUMERICS_PREFIX + str(k): str(v) for k, v in numerics.items() if v is not None})
    return out


def _software(machine: Mapping, versions: Mapping) -> dict:
    out = dict(versions or {})
    if isinstance(machine, Mapping) and machine.get("python"):
        out["python"] = machine["python"]
    return out


def _describe(kind, software: Mapping) -> str:
    libs = ", ".join(f"{name} {value}" for name, value in sorted(software.items()))
    return describe_kind(kind) + (f" ({libs})" if libs else "")


def compare(base_machine: Mapping, base_versions: Mapping, records: Iterable[dict]) -> tuple:
    """(same machine, one line naming both when not). Same: every record ran on the baseline's CPU kind
    and, where the baseline recorded them, with its library versions."""
    records = [r for r in records if isinstance(r.get("env"), dict) and r["env"].get("machine")]  # those that say
    kinds = {machine_kind(r["env"].get("machine")) for r in records}
    run_machine = next((r["env"].get("machine") for r in records), {}) or {}
    base_kind = machine_kind(base_machine)
    run_soft = _software(run_machine, versions_of(records))
    base_soft = _software(base_machine, base_versions)
    shared = set(run_soft) & set(base_soft)  # a baseline without versions: the CPU kind and Python decide
    same = base_kind is not None and kinds == {base_kind} and all(run_soft[k] == base_soft[k] for k in shared)
    if same:
        return True, None
    run_text = "; ".join(sorted(_describe(k, run_soft) for k in kinds)) or "an unknown machine"
    return False, f"machine: run on {run_text}; baseline on {_describe(base_kind, base_soft)}"


def _spread_data(path: Path):
    """The parsed spread file at ``path``, or the one-line reason it is not one (a str)."""
    try:
        data = json.loads(read_bounded(path))
    except ValueError as exc:
        return f"{path} is not valid JSON: {exc}"
    if not isinstance(data, dict) or data.get("format") != SPREAD_FORMAT:
        return f"{path} is not a {SPREAD_FORMAT} file"
    return data


def load_spread(path) -> dict:
    """{model: {"spread_pp": float, ...}} of a spread file; {} when there is none. A file that exists but
    cannot be used raises ValueError (one line): a silently absent spread would change verdicts."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = _spread_data(path)
    if isinstance(data, str):
        raise ValueError(data)
    return check_spread(data.get("models"), str(path))


def read_spread_file(path) -> Optional[tuple]:
    """(models, sources) of a spread file; None when ``path`` is not one (e.g. a baseline file or a run
    folder). A spread file whose models cannot be used raises ValueError (one line)."""
    path = Path(path)
    data = _spread_data(path) if path.is_file() else None
    if not isinstance(data, dict):
        return None  # not a spread file: the caller reads it as whatever else it may be
    return check_spread(data.get("models"), str(path)), [str(s) for s in data.get("sources") or []]


def larger_spread(*tables: Mapping) -> dict:
    """{model: entry}: per model the entry with the largest spread over the tables."""
    out = {}
    for table in tables:
        for model, entry in table.items():
            if model not in out or entry["spread_pp"] > out[model]["spread_pp"]:
                out[model] = dict(entry)
    return out


def check_spread(models, where: str) -> dict:
    """``models`` if it is {model: {"spread_pp": number >= 0, ...}}, else ValueError."""
    if not isinstance(models, dict) or not all(isinstance(v, dict) and _spread_ok(v.get("spread_pp"))
                                               for v in models.values()):
        raise ValueError(f"{where}: expected {{model: {{spread_pp: a number >= 0}}}}")
    return models


def _spread_ok(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def model_shifts(a: Mapping, b: Mapping) -> dict:
    """{model: (mean of b - a over configurations and seeds with the same config hash, largest |move|, pairs)}."""
    moves = {}
    for key, old in a.items():
        new = b.get(key)
        if new is None or old.n == 0:
            continue
        for seed, value in old.seeds.items():
            other = new.seeds.get(seed)
            if other and other.config_hash == value.config_hash and None not in (value.drop_pp, other.drop_pp):
                moves.setdefault(old.model, []).append(other.drop_pp - value.drop_pp)
    return {m: (sum(v) / len(v), max(abs(x) for x in v), len(v)) for m, v in moves.items()}


def spread(sources: list, earlier: Optional[Mapping] = None) -> dict:
    """{model: entry} from sources [(label, entries, machine, versions)]: every pair of sources on
    different machines (CPU kind, library versions or numerics settings) compared; a model's spread is its
    largest absolute mean shift over the pairs and over ``earlier`` ({model: entry} of a spread file whose
    runs may be gone: a measured spread is kept, not forgotten)."""
    out = larger_spread(earlier or {})
    for (la, ea, ma, va), (lb, eb, mb, vb) in combinations(sources, 2):
        desc_a, desc_b = (_describe(machine_kind(m), _software(m, v)) for m, v in ((ma, va), (mb, vb)))
        if desc_a == desc_b:
            continue  # the same machine: no cross-machine information
        for model, (shift, largest, pairs) in model_shifts(ea, eb).items():
            if model not in out or abs(shift) > out[model]["spread_pp"]:
                out[model] = {"spread_pp": round(abs(shift), 6), "shift_pp": round(shift, 6),
                              "largest_case_move_pp": round(largest, 6), "pairs": pairs,
                              "between": [f"{la}: {desc_a}", f"{lb}: {desc_b}"]}
    return out


def save_spread(models: dict, path, sources: list) -> None:
    write_atomic(Path(path), {"format": SPREAD_FORMAT, "created": now_iso(), "sources": sources,
                              "models": dict(sorted(models.items()))})
