"""One benchmark case, end to end: select, annotate, fine-tune QAT and a float control,
convert both, audit, measure, and return a record. No pytest here."""

from __future__ import annotations

import contextlib
import functools
import gzip
import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import audit, cache, export, quantize, records, size, train
from .backend import versions
from .config import Case
from .data import Dataset
from .evaluate import tflite_accuracy
from .registry import ModelSpec
from .select import select


PTQ_SAMPLES = 200  # representative examples from the training split for PTQ calibration


@dataclass(frozen=True)
class Environment:
    """Where a case runs and what it records about the machine."""

    cache_dir: Path = cache.DEFAULT_CACHE_DIR
    git_commit: str | None = None
    threads: int = 0

    @property
    def interpreter_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    def describe(self) -> dict:
        return {"versions": versions(), "machine": records.machine(), "git_commit": self.git_commit,
                "threads": self.threads}


@functools.lru_cache(maxsize=4)
def load_data(spec: ModelSpec, tier: str) -> Dataset:
    config = spec.tier(tier)
    return spec.dataset.load()(config.train_size, config.test_size)


def _initial_weights(spec: ModelSpec, model) -> str:
    """Where the float model's weights came from before the tier's pre-training on the task."""
    source = getattr(model, "pretrained_from", None)
    if source:
        return f"pre-trained: {source}"
    if spec.weights_env and os.environ.get(spec.weights_env):
        return f"user weights: {os.environ[spec.weights_env]}"
    return "random initialisation"


def spec_fingerprint(spec: ModelSpec, tier: str) -> str:
    """The spec's data plus its builder/loader source: what a config hash must cover."""
    return f"{spec.fingerprint(tier)}-{cache.code_hash(spec)}"


def describe_case(case: Case, spec: ModelSpec) -> dict:
    return {
        "model": case.model, "order": case.selection.order, "n": case.selection.n,
        "kind": case.selection.kind, "weight_bits": case.quant.weight_bits,
        "activation_bits": case.quant.activation_bits, "per_channel": case.quant.per_channel,
        "method": case.quant.method, "deployment": case.quant.deployment, "tier": case.tier,
        "seed": case.seed, "strategy": case.strategy, "workers": case.workers,
        "devices": 1 if case.strategy == "default" else case.workers,  # run_case records the real count
        "spec_fingerprint": spec_fingerprint(spec, case.tier),
    }


def _fine_tune(model, chosen, case: Case, config, data: Dataset, tuner=None) -> tuple:
    """A copy of ``model`` with ``chosen`` units annotated, fine-tuned: (model, TrainStats)."""
    train.set_seed(case.seed)
    if tuner is not None:  # under a tf.distribute strategy (harness/distribute.py)
        return tuner.fit(model, chosen, case.quant, config, data, case.seed)
    tuned = quantize.annotate(model, chosen, case.quant)
    train.compile_for_training(tuned, config.finetune_learning_rate)
    return tuned, train.fit_steps(tuned, data, config.finetune_steps, config.batch_size, case.seed)


class Phases:
    """Wall seconds per named phase of a case, recorded as ``phase_s`` (where a case's time goes)."""

    def __init__(self):
        self.seconds: dict = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _float_control(case: Case, config, data: Dataset, base, env: Environment, tuner=None) -> cache.Control:
    """The fine-tuned float control: shared through the cache, except under a distributed strategy,
    where fine-tuning it is part of what the case measures (its traffic and step times)."""

    def produce() -> cache.Control:
        model, stats = _fine_tune(base.model, (), case, config, data, tuner)
        if tuner is not None and not tuner.is_chief:
            return cache.Control(model, b"", float("nan"), float("nan"), stats, "", False)
        content = export.to_tflite(model, quantized=False)
        return cache.Control(model, content, train.keras_accuracy(model, data.x_test, data.y_test),
                             tflite_accuracy(content, data.x_test, data.y_test, threads=env.interpreter_threads),
                             stats, "", False)

    def rebuild():
        model = quantize.annotate(base.model, (), case.quant)
        train.compile_for_training(model, config.finetune_learning_rate)
        return model

    if tuner is not None:
        return produce()
    return cache.float_control(base, produce, rebuild, env.cache_dir)


def run_case(case: Case, spec: ModelSpec, env: Environment, tuner=None) -> dict:
    """Measure one case. Raises on failure; the caller turns exceptions into failed records.
    Non-default strategies go through harness/distribute.py, which calls back here with a ``tuner``;
    a non-chief multiworker process returns {} right after fine-tuning."""
    if tuner is None and case.strategy != "default":
        from . import distribute

        return distribute.run(case, spec, env)
    start = time.perf_counter()
    phase = Phases()
    config = spec.tier(case.tier)
    with phase("load"):
        data = load_data(spec, case.tier)
        base = cache.pretrained(spec, case.tier, case.seed, data, env.cache_dir)
        units = quantize.units_of(base.model)
    if len(units) != spec.num_units:
        raise ValueError(f"{spec.name}: built model has {len(units)} units, spec says {spec.num_units}")
    chosen = select(units, case.selection)
    predicted = size.predict(units, chosen, case.quant)

    ptq = case.quant.method == "ptq"
    with phase("float_control"):
        control = _float_control(case, config, data, base, env, tuner)

    with phase("qat_fit"):
        if ptq:  # the quantized model is the fine-tuned float control, quantized after training
            qat, qat_stats = control.model, None
        else:
            qat, qat_stats = _fine_tune(base.model, chosen, case, config, data, tuner)
    if tuner is not None and not tuner.is_chief:
        return {}

    with phase("convert"):
        if ptq and not chosen:  # N = 0: nothing to quantize; the debugger refuses an all-float denylist
            qat_tflite = control.tflite
        elif ptq:
            float_layers = [name for unit in units if unit not in chosen for name in unit.members]
            qat_tflite = export.to_tflite_ptq(control.model, data.x_train[:PTQ_SAMPLES], float_layers, case.quant,
                                              float_tflite=control.tflite)
        else:
            qat_tflite = export.to_tflite(qat, quantized=bool(chosen), quant=case.quant)
    convert_s = phase.seconds["convert"]
    control_tflite = control.tflite
    with phase("audit"):
        qat_audit, control_audit = audit.inspect(qat_tflite), audit.inspect(control_tflite)

    simulated = case.quant.deployment == "simulated"
    with phase("eval"):
        quant_keras = None if ptq else train.keras_accuracy(qat, data.x_test, data.y_test)
        quant_acc = quant_keras if simulated else tflite_accuracy(qat_tflite, data.x_test, data.y_test,
                                                                  threads=env.interpreter_threads)
    control_acc, control_keras = control.tflite_accuracy, control.keras_accuracy

    with phase("step_timing"):
        timed = {"float": control.model} if ptq else {"qat": qat, "float": control.model}
        step_ms = train.side_by_side_step_ms(timed, data, config.batch_size, config.timing_rounds,
                                             config.timing_steps)
    step_ms.setdefault("qat", None)
    total_params = sum(u.params for u in units)
    record = {
        "units_total": len(units),
        "units_selected": [u.index for u in chosen],
        "selected_layers": [u.weight_layer for u in chosen],
        "param_fraction": sum(u.params for u in chosen) / total_params,
        "pretrained_accuracy": base.accuracy,
        "pretrained_cached": base.cached,
        "initial_weights": _initial_weights(spec, base.model),
        "pretrain_s": base.train_s,
        "control_accuracy": control_acc,
        "control_accuracy_keras": control_keras,
        "quant_accuracy": quant_acc,
        "quant_accuracy_keras": quant_keras,
        "accuracy_source": "keras (simulated bit width)" if simulated else "tflite interpreter",
        "ptq_samples": PTQ_SAMPLES if ptq else None,
        "accuracy_drop_pp": (control_acc - quant_acc) * 100.0,
        "tflite_bytes": len(qat_tflite),
        "control_tflite_bytes": len(control_tflite),
        "gzip_bytes": len(gzip.compress(qat_tflite, 9)),
        "control_gzip_bytes": len(gzip.compress(control_tflite, 9)),
        "weight_bytes": qat_audit.weight_bytes,
        "overhead_bytes": len(qat_tflite) - qat_audit.weight_bytes,
        "quant_param_values": qat_audit.quant_param_values,
        "control_weight_bytes": control_audit.weight_bytes,
        "predicted_weight_bytes": predicted.weight_bytes,
        "predicted_float_bytes": predicted.float_bytes,
        "ideal_packed_bytes": predicted.ideal_bytes,
        "size_error_rel": abs(predicted.weight_bytes - qat_audit.weight_bytes) / max(1, qat_audit.weight_bytes),
        "quantized_kernels": qat_audit.quantized_kernels,
        "selected_kernels": predicted.quantized_kernels,
        "audit": qat_audit.as_dict(),
        "control_audit": {k: v for k, v in control_audit.as_dict().items() if k != "kernels"},
        "qat_step_ms": step_ms["qat"],
        "float_step_ms": step_ms["float"],
        "step_ratio": step_ms["qat"] / step_ms["float"] if step_ms["qat"] else None,
        "qat_fit_step_ms": qat_stats.step_ms_median if qat_stats else None,
        "float_fit_step_ms": control.stats.step_ms_median if control.stats else None,
        "qat_fit_s": qat_stats.wall_s if qat_stats else None,
        "float_fit_s": control.stats.wall_s if control.stats else None,
        "qat_final_loss": qat_stats.final_loss if qat_stats else None,
        "float_final_loss": control.stats.final_loss if control.stats else None,
        "finetune_steps": config.finetune_steps,
        "control_cached": control.cached,
        "control_key": control.key,
        "convert_s": convert_s,
        "wall_s": time.perf_counter() - start,
        "phase_s": {name: round(seconds, 3) for name, seconds in phase.seconds.items()},
        "dataset": data.describe(),
    }
    if tuner is not None:
        record.update(tuner.fields(units, chosen, case.quant, qat_audit, len(qat_tflite), len(control_tflite)))
    return record
