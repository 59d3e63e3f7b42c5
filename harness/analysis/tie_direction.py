"""Where the changed predictions went: the tie check of issue 32 on a run's own predictions. Pure (numpy).

INT8 logits tie for the top score, and argmax (what a device deploys) takes the lowest tied class index.
In the old reference that turned Fashion-MNIST "shirt" (class 6) into lower classes whenever the logits
layer was quantized, and a 0.1 pp "effect" of quantizing the final layers was that alone. Accuracy is now
tie-aware (harness/case/paired.py: a tie of k classes holding the true one counts 1/k), so a tie no longer
moves a drop by class order. This module shows it on the measured predictions, per case group (model,
selection, bits, method; seeds pooled):

- tied examples in the control and in the quantized model;
- the predictions argmax changed (deployed label differs from the control's), split by whether the
  quantized top score is tied, and each split by direction: to a lower or a higher class index;
- for the untied changes, the only ones tie-aware accuracy counts in full, the exact two-sided binomial p
  of lower against higher (p = 1/2 under no index preference);
- the group's deployed (argmax) and tie-aware drops, seed means.

A skew of the *tied* changes to lower indices is expected (argmax) and is what tie-aware accuracy removes;
a skew of the untied changes would be a real shift between classes, which a drop may honestly contain.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
from scipy import stats

from harness.results import records as _records
from harness.results import seedstats


@dataclass(frozen=True)
class Moves:
    """Changed predictions of one group, seeds pooled."""

    label: str  # "cnn-last1-w8a8-ptq"
    seeds: int
    examples: int
    control_ties: int
    quant_ties: int
    tied_lower: int
    tied_higher: int
    untied_lower: int
    untied_higher: int
    deployed_drop_pp: Optional[float]  # seed mean
    tie_aware_drop_pp: Optional[float]  # seed mean

    @property
    def untied_p(self) -> float:
        """Exact two-sided binomial p of untied lower vs higher moves (1.0 without any)."""
        moved = self.untied_lower + self.untied_higher
        if moved == 0:
            return 1.0
        return float(stats.binomtest(self.untied_lower, moved, 0.5).pvalue)

    def sentence(self) -> str:
        drops = ""
        if self.deployed_drop_pp is not None and self.tie_aware_drop_pp is not None:
            drops = (f"; drop with argmax {self.deployed_drop_pp:+.3f} pp, tie-aware {self.tie_aware_drop_pp:+.3f} pp "
                     f"(seed means)")
        return (f"`{self.label}` ({self.seeds} seed{'s' if self.seeds != 1 else ''}, {self.examples:,} test predictions): "
                f"{_count(self.quant_ties, 'tied top score')} in the quantized model, {self.control_ties:,} in the control; "
                f"argmax moved the tied ones {self.tied_lower:,} to a lower class and {self.tied_higher:,} to a higher "
                f"one; the untied changes went {self.untied_lower:,} lower and {self.untied_higher:,} higher "
                f"(exact binomial p = {self.untied_p:.2g}){drops}")


def reader(run_dir) -> Callable[[dict], dict]:
    """records.read_predictions of ``run_dir``; a missing or unreadable file (checksum, format) gives {} and
    so leaves that case out of the tie counts rather than failing a report."""
    def read(record: dict) -> dict:
        try:
            return _records.read_predictions(run_dir, record)
        except (OSError, ValueError):
            return {}
    return read


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def group_label(record: dict) -> str:
    """A case id without its seed: 'cnn-last1-w8a8-ptq-s3' and seed 0's 'cnn-last1-w8a8-ptq' share it."""
    case_id = str(record.get("case_id") or "")
    seed = record.get("seed")
    suffix = f"-s{seed}"
    return case_id[: -len(suffix)] if isinstance(seed, int) and case_id.endswith(suffix) else case_id


def _counts(predictions: dict) -> Optional[tuple]:
    if "quant_top_size" not in predictions or "control_top_size" not in predictions:
        return None  # written before tie-aware accuracy (schema 6): no tie sizes
    control = np.asarray(predictions["control"]).astype(np.int64)
    quant = np.asarray(predictions["quant"]).astype(np.int64)
    tied = np.asarray(predictions["quant_top_size"]) > 1
    changed = control != quant
    lower, higher = changed & (quant < control), changed & (quant > control)
    return (len(control), int(np.sum(np.asarray(predictions["control_top_size"]) > 1)), int(np.sum(tied)),
            int(np.sum(lower & tied)), int(np.sum(higher & tied)), int(np.sum(lower & ~tied)),
            int(np.sum(higher & ~tied)))


def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def moves(records: Iterable[dict], read_predictions: Callable[[dict], dict]) -> list:
    """One Moves per group of measured records with tie sizes, most quantized ties first.
    ``read_predictions(record)`` returns the record's prediction arrays (records.read_predictions)."""
    totals, deployed, aware = defaultdict(lambda: np.zeros(7, dtype=np.int64)), defaultdict(list), defaultdict(list)
    seeds = defaultdict(int)
    for record in records:
        if not record.get("predictions_file") or seedstats.drop_of(record) is None:
            continue
        counted = _counts(read_predictions(record))
        if counted is None:
            continue
        label = group_label(record)
        totals[label] += np.asarray(counted, dtype=np.int64)
        seeds[label] += 1
        deployed[label].append(seedstats.as_number(record.get("deployed_drop_pp")))
        aware[label].append(seedstats.drop_of(record))
    found = [Moves(label, seeds[label], *(int(v) for v in totals[label]), _mean(deployed[label]), _mean(aware[label]))
             for label in totals]
    return sorted(found, key=lambda m: (-m.quant_ties, m.label))


def section(records, read_predictions: Callable[[dict], dict], per_model: int = 3) -> list:
    """The report's lines: per model, the groups with the most tied quantized outputs."""
    found = [m for m in moves(records, read_predictions) if m.quant_ties or m.control_ties]
    if not found:
        return []
    by_model = defaultdict(list)
    for m in found:
        by_model[m.label.split("-")[0]].append(m)
    lines = ["## Ties: where the changed predictions went", "",
             "Tied top scores per case group (seeds pooled) and the predictions argmax changed against the control, "
             "by direction. Argmax sends tied ones to the lowest class index; tie-aware accuracy counts a tie of k "
             "classes 1/k, so only the untied changes count in full, and they should not prefer lower indices "
             "(harness/analysis/tie_direction.py).", ""]
    for model in sorted(by_model):
        shown = by_model[model][:per_model]
        lines += [f"- {m.sentence()}" for m in shown]
        if len(by_model[model]) > per_model:
            lines.append(f"- {model}: {len(by_model[model]) - per_model} more groups with ties")
    return lines + [""]
