"""Where thresholds live. The defaults are the fields below; per-model values are each ModelSpec's
``thresholds=`` in harness/design/registry.py (targets live on the workload, as in AlgoPerf); the rules
that judge a record against them are in harness/results/gates.py (per case and per configuration over
seeds) and harness/results/baseline_gate.py (against a saved baseline). Pure: no TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional


@dataclass(frozen=True)
class Thresholds:
    """Targets that live with a model spec; asserted by every case of that model."""

    max_drop_pp: tuple = ((8, 1.5), (4, 3.0))  # (bits, max accuracy drop in percentage points)
    min_whole_compression: tuple = ((8, 3.8), (4, 7.0))  # float bytes / whole-model bytes
    size_tolerance: float = 0.01  # |predicted - measured| / measured weight bytes
    tflite_vs_keras_pp: float = 0.5
    # The regression gate (harness/results/baseline_gate.py): the smallest increase of the mean drop over seeds that
    # counts as a regression, even when the noise says it is real; and the .tflite growth allowed.
    min_regression_pp: float = 1.0
    baseline_size_growth_rel: float = 0.01
    # A float control below this test accuracy means training collapsed: the case fails, since a
    # drop measured against a model at chance is no evidence about quantization.
    min_control_accuracy: float = 0.0
    # Where min_control_accuracy comes from, for the failure's message: "" (the model's), or the tier that
    # set its own floor (for_tier). Not a threshold: out of the repr and of equality.
    floor_source: str = field(default="", repr=False, compare=False)

    def for_tier(self, tier: str, config) -> "Thresholds":
        """These thresholds with the floor of ``config`` (a TierConfig of ``tier``), when it states one
        (``min_control_accuracy``), in place of the model's: a tier that trains its models to convergence
        (the reference tier) may demand more of its controls than a smoke tier can."""
        floor = getattr(config, "min_control_accuracy", None)
        if floor is None:
            return self
        return replace(self, min_control_accuracy=floor, floor_source=f"the {tier} tier's")

    def floor_text(self) -> str:
        """"the reference tier's floor 0.9" or "the model's floor 0.75"."""
        source = self.floor_source or "the model's"
        return f"{source} floor {self.min_control_accuracy:g}"

    def drop_bound(self, bits: int) -> Optional[float]:
        return dict(self.max_drop_pp).get(bits)

    def compression_bound(self, bits: int) -> Optional[float]:
        return dict(self.min_whole_compression).get(bits)
