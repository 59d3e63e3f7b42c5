"""Typed, frozen configuration values. Pure: no TensorFlow here."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Optional

ORDERS = ("last", "first", "single", "type", "sensitivity", "mixed", "last-inner", "first-inner", "ends8")
# last-N and first-N among the inner units only: the first and the last unit (cnn's 1-channel first conv,
# the logits) stay float on both sides, so neither order is one special layer (issue 32, item b)
INNER_ORDERS = ("last-inner", "first-inner")
# Orders whose case is one bit width per unit rather than one selection at one width: ``mixed`` (a
# planned budget) and ``ends8`` (the literature's default: first and last unit at ENDS_BITS[0], the rest at
# ENDS_BITS[1]; one case per seed). Their QuantConfig has the narrowest width, their ids no width tag.
PLAN_ORDERS = ("mixed", "ends8")
ENDS_BITS = (8, 4)
METHODS = ("qat", "ptq")
TIERS = ("smoke", "full", "reference")
STRATEGIES = ("default", "mirrored", "multiworker")
MIN_BITS, MAX_BITS = 2, 8
# A ``mixed`` case plans float, INT8 or INT4 per unit: the two widths TFLite stores as integer kernels
# that also run. Its QuantConfig has the narrowest (4): its drop target and deployment are W4's.
MIXED_BITS = (8, 4)
MAX_BUDGET_BYTES = 10 ** 12


def budget_tag(budget_bytes: int) -> str:
    """150000 -> 'b150k', 150500 -> 'b150500': bytes, with k when divisible by 1000."""
    return f"b{budget_bytes // 1000}k" if budget_bytes % 1000 == 0 else f"b{budget_bytes}"


def check_bits(bits, what: str = "weight bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ValueError(f"{what} must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{what} must be in {MIN_BITS}..{MAX_BITS}, got {bits}")
    return bits


@dataclass(frozen=True)
class QuantConfig:
    """How the selected units are quantized. Bit width is a typed constructor argument."""

    weight_bits: int = 8
    activation_bits: int = 8
    per_channel: Optional[bool] = None  # None: the scheme's default (per-channel conv, per-tensor dense)
    method: str = "qat"

    def __post_init__(self):
        check_bits(self.weight_bits)
        if self.activation_bits != 8:
            raise ValueError(f"activation bits must be 8 (the only width TFLite deploys), got {self.activation_bits}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")

    @property
    def deployment(self) -> str:
        """What the bit width becomes in the .tflite file.

        int8: real INT8 kernels; int4: real nibble-packed INT4 kernels;
        int8-storage: 5-7 bit values stored in INT8; simulated: 2-3 bits, stored as
        INT4 but not runnable by the interpreter, so accuracy is the Keras one.
        """
        if self.weight_bits == 8:
            return "int8"
        if self.weight_bits == 4:
            return "int4"
        if self.weight_bits >= 5:
            return "int8-storage"
        return "simulated"

    @property
    def storage_bits(self) -> int:
        """Bits per weight in the flatbuffer: INT8 for 5-8, packed INT4 for 2-4."""
        return 8 if self.weight_bits >= 5 else 4

    @property
    def tag(self) -> str:
        tag = f"w{self.weight_bits}a{self.activation_bits}"
        if self.per_channel is not None:
            tag += "-pc" if self.per_channel else "-pt"
        if self.method != "qat":
            tag += f"-{self.method}"
        return tag


@dataclass(frozen=True)
class Selection:
    """Which units to quantize: the last/first n, the single unit n, every unit of a kind, the n units
    that save the most bytes per predicted cost (``sensitivity``, issue 17; needs per-unit costs),
    (``mixed``) the plan of float/INT8/INT4 per unit of least predicted cost within n bytes of weights,
    the last/first n of the inner units (``last-inner``/``first-inner``: the first and last unit held
    out), or (``ends8``, n = 0) the first and last unit at 8 bits and every other unit at 4."""

    order: str = "last"
    n: int = 0
    kind: Optional[str] = None

    def __post_init__(self):
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.order == "type":
            if not self.kind:
                raise ValueError("order 'type' needs a unit kind, e.g. Selection('type', kind='dense')")
        elif isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise ValueError(f"n must be an integer >= 0, got {self.n!r}")
        elif self.order == "mixed" and not 1 <= self.n <= MAX_BUDGET_BYTES:
            raise ValueError(f"order 'mixed' needs a weight-bytes budget n in 1..{MAX_BUDGET_BYTES}, got {self.n}")
        elif self.order == "ends8" and self.n != 0:
            raise ValueError(f"order 'ends8' is one plan per model (n = 0), got n = {self.n}")

    @property
    def id(self) -> str:
        if self.order == "type":
            return f"type-{self.kind}"
        if self.order == "sensitivity":  # short, like the issue's `mlp-sens3-w8a8`: ids end up in -k filters
            return f"sens{self.n}"
        if self.order == "mixed":  # the issue's `mlp-mixed-b150k`: n is the budget in bytes
            return f"mixed-{budget_tag(self.n)}"
        if self.order == "ends8":
            return "ends8"
        if self.order in INNER_ORDERS:  # cnn-lastin2-w4a8: short and one word, like sens3
            return f"{self.order.split('-')[0]}in{self.n}"
        return f"{self.order}{self.n}"


PRECISIONS = ("float32", "bf16-where-native")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class PretrainRecipe:
    """How a tier pre-trains its float model (harness/case/pretrain.py). The default is the suite's
    original loop: the tier's batch and learning rate, constant, in float32. A fast recipe trains with
    larger batches (fewer, fuller steps: on 2 cores a batch of 32 leaves most of a step to overhead),
    a learning rate warmed up then decayed on a cosine to 0, and bfloat16 compute where the CPU has
    native bf16 dot products (``bf16-where-native``; float32 elsewhere, and the record says which)."""

    batch_size: Optional[int] = None  # None: the tier's batch_size
    learning_rate: Optional[float] = None  # the peak; None: the tier's learning_rate
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    precision: str = "float32"

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                            or self.batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate!r}")
        if not 0 <= self.warmup_epochs <= 100:
            raise ValueError(f"warmup_epochs must be in [0, 100], got {self.warmup_epochs!r}")


@dataclass(frozen=True)
class TierConfig:
    """How much work one tier does for one model."""

    train_size: Optional[int]  # None: the whole split
    test_size: Optional[int]
    pretrain_epochs: int
    finetune_steps: int
    batch_size: int = 32
    learning_rate: float = 1e-3
    finetune_learning_rate: float = 1e-4
    n_values: tuple = ()
    bits: tuple = (8, 4)
    orders: tuple = ("last",)
    seeds: tuple = (0,)
    # True: a seed changes the pre-training too (the full tier: seed-to-seed variance includes it).
    # False: one pre-trained model (seed 0) per tier, and a seed changes only the fine-tuning of the
    # QAT model and of its float control (the smoke tier: replication for the gate at low cost).
    pretrain_per_seed: bool = True
    methods: tuple = ("qat",)  # "ptq" cases run at 8 bits only (TFLite PTQ is 8-bit)
    timing_rounds: int = 3  # side-by-side QAT vs float step timing after the measurements
    timing_steps: int = 10
    timing_seeds: tuple = ()  # time the steps only for these seeds (empty: every seed); timing is per case, not per seed
    # Weight-bytes budgets of the ``mixed`` order's cases (one case per budget and seed). Not in the repr,
    # which the spec fingerprint and the pre-trained cache key hash: budgets shape no pre-training, and
    # each case's budget is in its own config hash (Selection.n).
    mixed_budgets: tuple = field(default=(), repr=False)
    # The float control accuracy every model of this tier must reach on the tier's test set; None: the
    # model's Thresholds.min_control_accuracy (a collapse floor). A control below it fails its case, naming
    # the floor (harness/results/gates.py). Not in the repr: a floor judges a case, it shapes no model.
    min_control_accuracy: Optional[float] = field(default=None, repr=False)
    # True: every train step of the model (pre-training, control, QAT) is one XLA-compiled function
    # (Keras' jit_compile). Pays only where op dispatch is most of a step (mlp: 3 ms steps of tiny
    # Dense ops; docs/performance.md); XLA's convolutions are slower than oneDNN's. Not in the repr:
    # ModelSpec.fingerprint hashes it only when set, so the keys of the other models stay as they were.
    train_step_xla: bool = field(default=False, repr=False)
    # How the float model is pre-trained. Not in the repr: ModelSpec.fingerprint hashes it only when it is
    # not the default, so the keys of tiers that keep the original loop stay as they were.
    pretrain: PretrainRecipe = field(default=PretrainRecipe(), repr=False)
    # Weight widths of an order where the tier runs fewer than ``bits``, e.g. (("single", (4,)),): a sweep
    # narrowed where its cost is high. Not in the repr, like mixed_budgets: a case's bits are in its own
    # config hash, and the widths run shape no pre-training.
    order_bits: tuple = field(default=(), repr=False)

    def __post_init__(self):
        if isinstance(self.pretrain, dict):  # a tier read back from JSON (dataclasses.asdict, a job file)
            object.__setattr__(self, "pretrain", PretrainRecipe(**self.pretrain))
        if not isinstance(self.pretrain, PretrainRecipe):
            raise ValueError(f"pretrain must be a PretrainRecipe, got {type(self.pretrain).__name__}")
        for entry in self.order_bits:
            if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)
                    and isinstance(entry[1], (tuple, list)) and entry[1] and set(entry[1]) <= set(self.bits)):
                raise ValueError(f"order_bits entries must be (order, non-empty widths among bits {self.bits}), "
                                 f"got {entry!r}")
        floor = self.min_control_accuracy
        if floor is not None and (isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor <= 1):
            raise ValueError(f"min_control_accuracy must be an accuracy in [0, 1] or None, got {floor!r}")

    def bits_of(self, order: str) -> tuple:
        """The weight widths this tier runs ``order`` at."""
        return next((tuple(widths) for name, widths in self.order_bits if name == order), self.bits)

    def pretrain_seed(self, seed: int) -> int:
        """The seed of the pre-trained model that a case of ``seed`` starts from."""
        return seed if self.pretrain_per_seed else 0


@dataclass(frozen=True)
class Case:
    model: str
    selection: Selection
    quant: QuantConfig
    tier: str = "smoke"
    seed: int = 0
    strategy: str = "default"
    workers: int = 1

    @property
    def id(self) -> str:
        parts = [self.model, self.selection.id]
        if self.selection.order not in PLAN_ORDERS:  # a plan's widths are per unit, not one tag
            parts.append(self.quant.tag)
        if self.seed:
            parts.append(f"s{self.seed}")
        return "-".join(parts)

    def as_dict(self) -> dict:
        return asdict(self)

    def config_hash(self, spec_fingerprint: str = "") -> str:
        """Changes whenever anything that affects the measured numbers changes."""
        payload = json.dumps({"case": self.as_dict(), "spec": spec_fingerprint}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def stable_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunOptions:
    """The validated suite options of one pytest session."""

    tier: str = "smoke"
    bits: tuple = ()  # empty: the tier's default
    orders: tuple = ()
    seeds: tuple = ()
    strategy: str = "default"
    workers: int = 1
    results: str = "results"
    run_id: Optional[str] = None
    baseline: Optional[str] = None
    save_baseline: Optional[str] = None
    resume: Optional[str] = None
    methods: tuple = ()
    named_run_id: Optional[str] = None  # --qat-run-id as given (run_id above is the folder actually used)
    cache: Optional[str] = None  # None: $QATBENCH_CACHE or .qatbench-cache
    threads: Optional[int] = None  # None: 1 under xdist, else TensorFlow's default
    timeout: float = 0.0
    drop_tolerance: Optional[float] = None  # None: each spec's min_regression_pp
    budget: Optional[float] = None
    size_budget: Optional[int] = None
    strict_baseline: bool = False
    check_gpu: bool = False
    shard: tuple = ()  # (index, count) from --qat-shard I/K; empty: every selected case
    models: tuple = ()  # --qat-models: only these models (empty: every model of the tier)
    model_file: Optional[str] = None  # --qat-model-file: a user's trained Keras model ...
    data: Optional[str] = None  # ... and --qat-data, its data
    custom_objects: Optional[str] = None  # module:name of the model file's custom layers
    max_drop: Optional[float] = None  # the model file's drop target (pp) at every bit width
    skip_unsupported: bool = False  # keep layers tfmot cannot quantize float instead of failing
    trust_model_file: bool = False  # --qat-trust-model-file: the model file may run code (Lambda layers)
    mixed_budgets: tuple = ()  # --qat-mixed-budgets: the mixed order's byte budgets (empty: the tier's)
    keep_tflite: bool = False  # --qat-keep-tflite: each case's deployable .tflite beside its record
    latency: Optional[bool] = None  # --qat-latency on/off; None: $QATBENCH_LATENCY, default on
