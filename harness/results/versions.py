"""One code version per configuration: records of one configuration (a case id without its seed) made by
different code never share a seed mean. Pure.

A record's ``config_hash`` covers its seed too, so the seeds of one configuration always differ in it; what
must agree is the rest of what the hash covers: the spec fingerprint (the spec's data, the model, data and
pipeline source and the library versions, harness/case/cache.py), the tier, the strategy and the workers.
Where a folder holds several (a resumed run after a code edit, shards from two checkouts), the version of
the newest record wins and the others are left out of the means, with one line per configuration; they stay
in ``cases/`` and ``records.jsonl``, so no measurement is lost.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from typing import Iterable

from harness.results.baseline import baseline_key


def version_of(record: dict):
    """What the config hash covers besides the case id and seed; None when the record does not say
    (an error before the spec was read, a schema-1 record): such a record takes no side."""
    if not record.get("spec_fingerprint"):
        return None
    return tuple(record.get(name) for name in ("spec_fingerprint", "tier", "strategy", "workers"))


def label(version) -> str:
    """A short name for a version in one line (the fingerprint is 50 characters)."""
    return hashlib.sha256(json.dumps(version, default=str).encode()).hexdigest()[:12]


def one_version(records: Iterable[dict]) -> tuple:
    """(kept, left_out, notes): per configuration only the records of the version whose newest record is
    the newest; the others left out with one note each. Records without a version are always kept."""
    records = list(records)
    by_key = defaultdict(lambda: defaultdict(list))
    for record in records:
        version = version_of(record)
        if version is not None:
            by_key[baseline_key(record)][version].append(record)
    out, notes = set(), []
    for key in sorted(by_key):
        versions = by_key[key]
        if len(versions) < 2:
            continue
        newest = max(versions, key=lambda v: max(str(r.get("created") or "") for r in versions[v]))
        dropped = [r for v, group in versions.items() if v != newest for r in group]
        out.update(id(r) for r in dropped)
        notes.append(f"mixed code versions: {key} has records of {len(versions)} config versions (spec "
                     f"fingerprint, tier, strategy, workers); using the newest ({label(newest)}, "
                     f"{len(versions[newest])} records), {len(dropped)} records left out of its means: "
                     + ", ".join(sorted(r["case_id"] for r in dropped)))
    kept = [r for r in records if id(r) not in out]
    return kept, [r for r in records if id(r) in out], notes
