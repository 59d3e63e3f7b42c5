"""tf.distribute strategies for fine-tuning: default, mirrored (local devices), multiworker.

- ``mirrored``: every local GPU (under pytest-xdist, this worker's share of them), or on a CPU-only
  machine W logical CPU devices. Logical devices can only be set before TensorFlow initializes,
  so they are configured at the first use in the process; a process already initialized with
  another device count fails with a one-line error.
- ``multiworker``: MultiWorkerMirroredStrategy with RING collectives. Collective ops must be
  configured at program start, so each worker is its own process (harness/distributed/worker.py, launched by
  harness/distributed/launcher.py); the cluster comes from TF_CONFIG or, under Slurm, SlurmClusterResolver.

Models are built, annotated and compiled inside ``strategy.scope()``; the training set is
distributed with an explicit shard policy. After fine-tuning, the weights are copied into plain
(non-distributed) models, which the chief converts, audits, evaluates and times like any case.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

from harness.distributed import bandwidth
from harness.case import quantize, train
from harness.backend import tf, set_threads
from harness.options import xdist_worker

SHARD_POLICY = "DATA"  # each worker reads the data and keeps every W-th example: same global batches


STEP_TIME_NOTE = ("qat_fit_step_ms/float_fit_step_ms: median step while fine-tuning under the strategy; "
                  "qat_step_ms/float_step_ms: plain copies timed afterwards in the chief alone (one process)")


class DistributeError(RuntimeError):
    """A strategy cannot be set up as asked; the message is one line."""


# -- devices ------------------------------------------------------------------------------------
def _xdist_share(items: list) -> list:
    """This pytest-xdist worker's share of ``items`` (round robin); all of them outside xdist."""
    worker = xdist_worker()
    if worker is None or not items:
        return items
    index, count = worker
    return items[index::count] if len(items) >= count else [items[index % len(items)]]


def configure_cpu_devices(count: int) -> None:
    """Split the CPU into ``count`` logical devices; must run before TensorFlow initializes."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != count:
            raise DistributeError(
                f"mirrored needs {count} logical CPU devices but TensorFlow is already initialized in this "
                f"process with {have}; devices are fixed at the first TensorFlow op: run mirrored cases in a "
                "fresh process (not after default cases or in-process TensorFlow tests)") from None


def configure_gpus(gpus: list) -> None:
    try:
        tf.config.set_visible_devices(gpus, "GPU")
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
        visible = tf.config.get_visible_devices("GPU")
        if len(visible) != len(gpus):
            raise DistributeError(f"mirrored needs {len(gpus)} visible GPUs but TensorFlow is already "
                                  f"initialized with {len(visible)}") from None


def mirrored_devices(workers: int) -> tuple:
    """Device names for MirroredStrategy: the local GPUs (first W when W > 1), else W logical CPUs."""
    gpus = _xdist_share(tf.config.list_physical_devices("GPU"))
    if gpus:
        if 1 < workers < len(gpus):
            gpus = gpus[:workers]
        configure_gpus(gpus)
        return tuple(f"/gpu:{i}" for i in range(len(gpus)))
    configure_cpu_devices(workers)
    return tuple(f"/cpu:{i}" for i in range(workers))


# -- strategies ---------------------------------------------------------------------------------
def cluster_resolver():
    """The environment's cluster: TF_CONFIG if set, else Slurm's, else a one-line error."""
    resolvers = tf.distribute.cluster_resolver
    if os.environ.get("TF_CONFIG"):
        return resolvers.TFConfigClusterResolver()
    if int(os.environ.get("SLURM_NTASKS", "0") or 0) > 1 and "SLURM_PROCID" in os.environ:
        return resolvers.SlurmClusterResolver()
    raise DistributeError("multiworker needs a cluster: set TF_CONFIG (the launcher does) or run under Slurm "
                          "with more than one task")


@functools.lru_cache(maxsize=None)
def strategy_for(name: str, workers: int = 1):
    """The process's strategy; created once, at its first use (for multiworker: at program start)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(mirrored_devices(workers)))
    if name == "multiworker":
        ring = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=cluster_resolver(),
                                                         communication_options=ring)
    raise DistributeError(f"unknown strategy {name!r}; choose from: default, mirrored, multiworker")


def dataset_options() -> "tf.data.Options":
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = getattr(tf.data.experimental.AutoShardPolicy, SHARD_POLICY)
    return options


# -- weights ------------------------------------------------------------------------------------
def replica_digests(strategy, model) -> list:
    """sha256 of every weight (quantizer ranges included), once per local replica."""
    digests = None
    for variable in model.weights:
        values = strategy.experimental_local_results(variable)
        digests = digests or [hashlib.sha256() for _ in values]
        for digest, value in zip(digests, values):
            digest.update(value.numpy().tobytes())
    return [d.hexdigest()[:16] for d in digests or []]


def quantizer_variables(model) -> tuple:
    """(synced, local) lists of (name, size) for the non-trainable quantizer range variables."""
    synced, local = [], []
    for variable in model.non_trainable_weights:
        name = variable.name.split(":")[0]
        if not (name.endswith("_min") or name.endswith("_max")):
            continue
        size = int(variable.shape.num_elements() or 1)
        is_weight_range = any(name.endswith(f"{w}_{m}") for w in ("kernel", "depthwise_kernel") for m in ("min", "max"))
        (local if is_weight_range else synced).append((name, size))
    return synced, local


# -- fine-tuning --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tuner:
    """Fine-tunes under a strategy; remembers what each fit moved over the network."""

    strategy: object
    name: str
    workers: int
    is_chief: bool = True
    in_process: bool = True  # mirrored: reductions never reach the network
    callbacks: tuple = ()  # extra Keras callbacks for fit (fault injection in tests)
    traffic: dict = field(default_factory=dict)  # label -> bandwidth.FitTraffic
    digests: dict = field(default_factory=dict)  # label -> per-replica weight digests
    quantizers: dict = field(default_factory=dict)

    @property
    def devices(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def fit(self, base_model, chosen: Sequence, quant, config, data, seed: int) -> tuple:
        """Fine-tune a copy of ``base_model`` (``chosen`` units quantized); returns (plain model, stats).
        A case fine-tunes the float control first, then the QAT model (which has no quantized unit at N = 0)."""
        label = "qat" if "float" in self.traffic else "float"
        with self.strategy.scope():
            model = quantize.annotate(base_model, chosen, quant)
            # TensorFlow's ops, whatever the tier's train_step_xla: XLA cannot compile the workers'
            # collectives on a CPU (InvalidArgumentError); the record's train_step says "ops"
            train.compile_for_training(model, config.finetune_learning_rate)
        before = bandwidth.loopback()
        stats = train.fit_steps(model, data, config.finetune_steps, config.batch_size, seed,
                                dataset_options=dataset_options(), callbacks=list(self.callbacks))
        after = bandwidth.loopback()
        moved = (after - before).sent if before and after else None
        params = sum(int(w.shape.num_elements()) for w in model.trainable_weights)
        self.traffic[label] = bandwidth.FitTraffic(label, stats.steps, params, moved)
        self.digests[label] = replica_digests(self.strategy, model)
        if chosen:
            self.quantizers["vars"] = quantizer_variables(model)
        if not self.is_chief:
            return model, stats
        plain = quantize.annotate(base_model, chosen, quant)  # outside the scope: no collectives after fit
        plain.set_weights(model.get_weights())
        train.compile_for_training(plain, config.finetune_learning_rate)
        return plain, stats

    def fields(self, units, chosen, quant, qat_audit, tflite_bytes: int, control_tflite_bytes: int) -> dict:
        """Record fields: devices, all-reduce predicted vs measured, quantizer sync, payload."""
        synced, local = self.quantizers.get("vars", ([], []))
        sync = bandwidth.quantizer_sync_estimate(sum(s for _, s in synced), sum(s for _, s in local),
                                                 self.devices, len(synced), len(local))
        qat = self.traffic.get("qat") or self.traffic["float"]
        control = self.traffic.get("float") if "qat" in self.traffic else None
        valid = bandwidth.measured_valid_here(self.in_process) and qat.loopback_bytes is not None
        transport = "in-process copies (no network)" if self.in_process else "RING collectives over gRPC"
        fields = bandwidth.traffic_fields(qat, control, self.devices, self.devices, valid, sync, transport)
        kernel_bytes = sum(k.bytes + k.bias_bytes for k in qat_audit.kernels if k.quantized)
        fields.update(bandwidth.payload_fields(units, chosen, quant, tflite_bytes, control_tflite_bytes,
                                               kernel_bytes))
        fields.update(step_time_note=STEP_TIME_NOTE, shard_policy=SHARD_POLICY,
                      replica_weight_digests=dict(self.digests),
                      replicas_identical={k: len(set(v)) == 1 for k, v in self.digests.items()})
        return fields


def run(case, spec, env, **launch) -> dict:
    """Run a mirrored case in this process, or a multiworker case in W worker processes."""
    from harness.case import pipeline

    if case.strategy == "mirrored":
        tuner = Tuner(strategy_for("mirrored", case.workers), "mirrored", case.workers)
        return pipeline.measure_here(case, spec, env, tuner=tuner)
    if case.strategy == "multiworker":
        from harness.distributed import launcher

        return launcher.measure_on_workers(case, spec, env, **launch)
    raise DistributeError(f"strategy {case.strategy!r} does not run through harness.distributed.strategy")


def worker_tuner(workers: int, threads: int, callbacks: Optional[Sequence] = None) -> Tuner:
    """Inside a worker process, before anything else: threads, then the MultiWorkerMirroredStrategy."""
    set_threads(threads)
    strategy = strategy_for("multiworker", workers)
    resolver = strategy.cluster_resolver
    is_chief = resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0)
    return Tuner(strategy, "multiworker", workers, is_chief=is_chief, in_process=False,
                 callbacks=tuple(callbacks or ()))
