"""One benchmark case, end to end: select, annotate, fine-tune QAT and a float control,
convert both, audit, measure, and return a record. No pytest here."""

from __future__ import annotations

import contextlib
import hashlib
import dataclasses
import functools
import gzip
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import progress
from harness.case import audit, cache, export, latency, mixed_case, native_kernels, paired, quantize, train
from harness.results import records
from harness.design import size
from harness.backend import devices, numerics, versions
from harness.design.config import PLAN_ORDERS, Case
from harness.models.data import Dataset
from harness.case.evaluate import tflite_accuracy, tflite_predict
from harness.design.registry import ModelSpec
from harness.design.select import select


PTQ_SAMPLES = 200  # representative examples from the training split for PTQ calibration
PREDICTIONS = "_predictions"  # record key of the predicted labels; stored beside the record, not in it
TFLITE = "_tflite"  # record key of the audited .tflite bytes; written beside the record with --qat-keep-tflite
load_data = cache.load_data  # the tier's data, loaded once per process
spec_fingerprint = cache.spec_fingerprint  # what a config hash covers


@dataclass(frozen=True)
class Environment:
    """Where a case runs and what it records about the machine."""

    cache_dir: Path = cache.DEFAULT_CACHE_DIR
    git_commit: str | None = None
    threads: int = 0
    latency: bool | None = None  # --qat-latency on/off; None: $QATBENCH_LATENCY (default on)

    @property
    def interpreter_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    def describe(self) -> dict:
        return {"versions": versions(), "numerics": numerics(), "machine": records.machine(),
                "git_commit": self.git_commit,
                "threads": self.threads, "devices": devices(), "native_kernels": native_kernels.status()}


def _initial_weights(spec: ModelSpec, model) -> str:
    """Where the float model's weights came from before the tier's pre-training on the task."""
    source = getattr(model, "pretrained_from", None)
    if source:
        return f"pre-trained: {source}"
    if spec.weights_env and os.environ.get(spec.weights_env):
        return f"user weights: {os.environ[spec.weights_env]}"
    return "random initialisation"


def describe_case(case: Case, spec: ModelSpec) -> dict:
    return {
        "model": case.model, "order": case.selection.order, "n": case.selection.n,
        "kind": case.selection.kind, "weight_bits": case.quant.weight_bits,
        "activation_bits": case.quant.activation_bits, "per_channel": case.quant.per_channel,
        "method": case.quant.method, "tier": case.tier,
        "deployment": "int8+int4" if case.selection.order in PLAN_ORDERS else case.quant.deployment,
        "seed": case.seed, "strategy": case.strategy, "workers": case.workers,
        "devices": 1 if case.strategy == "default" else case.workers,  # the strategy records the real count
        "spec_fingerprint": spec_fingerprint(spec, case.tier),
    }


def _fine_tune(model, chosen, case: Case, config, data: Dataset, tuner=None, bits_of=None) -> tuple:
    """A copy of ``model`` with ``chosen`` units annotated (at ``bits_of`` per unit for a mixed plan),
    fine-tuned: (model, TrainStats)."""
    train.set_seed(case.seed)
    if tuner is not None:  # under a tf.distribute strategy (harness/distributed/strategy.py)
        if bits_of is not None:
            raise ValueError("a mixed plan runs with the default strategy only")
        return tuner.fit(model, chosen, case.quant, config, data, case.seed)
    tuned = quantize.annotate(model, chosen, case.quant, bits_of)
    train.compile_for_training(tuned, config.finetune_learning_rate, config.train_step_xla)
    return tuned, train.fit_steps(tuned, data, config.finetune_steps, config.batch_size, case.seed)


class Phases:
    """Wall seconds per named phase of a case, recorded as ``phase_s`` (where a case's time goes)."""

    def __init__(self):
        self.seconds: dict = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        progress.begin_phase(name)  # labels the live progress of the steps inside it
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
        train.compile_for_training(model, config.finetune_learning_rate, config.train_step_xla)
        return model

    if tuner is not None:
        return produce()
    return cache.float_control(base, produce, rebuild, env.cache_dir, finetune_seed=case.seed)


_CONTROL_TOP: dict = {}



def _selected(case: Case, base, units, data: Dataset) -> tuple:
    """(selected units, {unit index: bits} of a mixed or ends8 plan or None, sensitivity field, mixed_plan
    field, the plan's SizePrediction or None). Only the sensitivity and mixed orders compute scores."""
    if case.selection.order in ("mixed", "ends8"):
        plan, bits_of, field = (mixed_case.plan(case, base, units, data) if case.selection.order == "mixed"
                                else mixed_case.ends(units))
        chosen = tuple(u for u in units if u.index in bits_of)
        return chosen, bits_of, None, field, mixed_case.size_prediction(units, plan)
    costs, sensitivity = (mixed_case.sensitivity_field(case, base, units, data)
                          if case.selection.order == "sensitivity" else (None, None))
    return select(units, case.selection, costs, case.quant.weight_bits), None, sensitivity, None, None


@functools.lru_cache(maxsize=2)
def _control_gzip_bytes(content: bytes) -> int:
    """Every case of a seed shares its control's file: compress it once (4.5 s for minilm2's 61 MB)."""
    return len(gzip.compress(content, 9))


def _control_top(control: cache.Control, data: Dataset, threads: int) -> paired.TopSet:
    """The control's top-score classes, computed once per control (every case of a seed shares it)."""
    key = (control.key, len(data.y_test))
    if key not in _CONTROL_TOP:
        _CONTROL_TOP.clear()  # cases run model by model, seed by seed: keep only the latest
        outputs = tflite_predict(control.tflite, data.x_test, threads=threads)
        _CONTROL_TOP[key] = (paired.top_set(outputs, data.y_test), outputs.runtime)
    return _CONTROL_TOP[key]


def _accuracy_fields(case: Case, control: cache.Control, qat, qat_tflite: bytes, data: Dataset,
                     env: Environment) -> dict:
    """Accuracies of the control and the quantized model, scored on the same test examples, with
    the paired evidence of their difference (harness/case/paired.py): tie-aware (a top score shared by
    k classes that include the true one counts 1/k), with the deployed argmax accuracies beside them.
    ``qat`` is None for PTQ (no Keras model of the quantized file). The predicted labels and tie sets
    go back under ``PREDICTIONS`` for the caller to store beside the record, so any analysis can be
    redone from the run folder."""
    threads = env.interpreter_threads
    simulated = case.quant.deployment == "simulated"
    control_top, control_runtime = _control_top(control, data, threads)
    keras_top = None if qat is None else paired.top_set(train.keras_outputs(qat, data.x_test), data.y_test)
    if simulated:
        quant, runtime = keras_top, control_runtime
    else:
        outputs = tflite_predict(qat_tflite, data.x_test, threads=threads)
        quant, runtime = paired.top_set(outputs, data.y_test), outputs.runtime
    fields = paired.tie_aware_evidence(control_top, quant)
    return {
        **fields,
        "control_accuracy_keras": control.keras_accuracy,
        # argmax, like the file's deployed accuracy it is checked against (harness/results/gates.py)
        "quant_accuracy_keras": None if keras_top is None else float(np.mean(keras_top.right)),
        "accuracy_source": "keras (simulated bit width)" if simulated else "tflite interpreter",
        "tflite_runtime": runtime or control_runtime,
        "ptq_samples": PTQ_SAMPLES if qat is None else None,
        "accuracy_drop_pp": (fields["control_accuracy"] - fields["quant_accuracy"]) * 100.0,
        PREDICTIONS: {"y_true": data.y_test, "control": control_top.labels, "quant": quant.labels,
                      "control_top_size": control_top.size, "quant_top_size": quant.size,
                      "control_top_hit": control_top.hit, "quant_top_hit": quant.hit},
    }


def _quantized_model(case: Case, chosen, control: cache.Control, base, config, data: Dataset, tuner,
                     bits_of=None) -> tuple:
    """(model, TrainStats or None) of the quantized side of the case."""
    if case.quant.method == "ptq":  # the fine-tuned float control, quantized after training
        return control.model, None
    if not chosen and tuner is None:
        # N = 0: annotated with nothing and fine-tuned with the control's seed, data and steps is
        # the very same call as the control's: reuse it (under a strategy its traffic is measured).
        return control.model, control.stats
    return _fine_tune(base.model, chosen, case, config, data, tuner, bits_of)


def _convert(case: Case, units, chosen, control: cache.Control, qat, data: Dataset) -> bytes:
    if not chosen and (case.quant.method == "ptq" or qat is control.model):
        return control.tflite  # N = 0 (PTQ: the debugger refuses an all-float denylist)
    if case.quant.method == "ptq":
        float_layers = [name for unit in units if unit not in chosen for name in unit.members]
        return export.to_tflite_ptq(control.model, data.x_train[:PTQ_SAMPLES], float_layers, case.quant,
                                    float_tflite=control.tflite)
    return export.to_tflite(qat, quantized=bool(chosen), quant=case.quant)


def _selection_fields(spec: ModelSpec, units, chosen, base) -> dict:
    return {
        "units_total": len(units),
        "units_selected": [u.index for u in chosen],
        "selected_layers": [name for u in chosen for name in u.weight_layers],
        "param_fraction": sum(u.params for u in chosen) / sum(u.params for u in units),
        "unit_table": [dataclasses.asdict(unit) for unit in units],
        "pretrained_accuracy": base.accuracy,
        "pretrained_cached": base.cached,
        "initial_weights": _initial_weights(spec, base.model),
        "pretrain_s": base.train_s,
        "pretrain_recipe": base.recipe,
    }


def _size_fields(qat_tflite: bytes, control_tflite: bytes, qat_audit, control_audit, predicted) -> dict:
    return {
        "tflite_bytes": len(qat_tflite),
        "tflite_sha256": hashlib.sha256(qat_tflite).hexdigest(),  # names the deployable file (--qat-keep-tflite)
        TFLITE: qat_tflite,
        "control_tflite_bytes": len(control_tflite),
        "gzip_bytes": len(gzip.compress(qat_tflite, 9)),
        "control_gzip_bytes": _control_gzip_bytes(control_tflite),
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
    }


def _timing_fields(case: Case, config, data: Dataset, qat, qat_stats, control: cache.Control, tuner=None) -> dict:
    """Train-step times of the quantized model and the control, side by side in this process (on the
    tier's timing seeds only), and the medians measured during fine-tuning."""
    step_ms = {"qat": None, "float": None}
    if not config.timing_seeds or case.seed in config.timing_seeds:
        timed = {"float": control.model} if qat is control.model else {"qat": qat, "float": control.model}
        step_ms.update(train.side_by_side_step_ms(timed, data, config.batch_size, config.timing_rounds,
                                                  config.timing_steps))
    return {
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
        # how the control's and the QAT model's train steps ran: one XLA function, or TensorFlow's ops
        "train_step": "xla" if config.train_step_xla and tuner is None else "ops",
        "control_cached": control.cached,
        "control_key": control.key,
    }


def measure_here(case: Case, spec: ModelSpec, env: Environment, tuner=None) -> dict:
    """Measure one case in this process. Raises on failure; the caller turns exceptions into failed
    records. Under a tf.distribute strategy (harness/distributed/strategy.py) it runs with a ``tuner``; a
    non-chief multiworker process returns {} right after fine-tuning. harness/measure.py picks the path."""
    if tuner is None and case.strategy != "default":
        raise ValueError(f"strategy {case.strategy!r} runs through harness.measure.measure, not here")
    start, phase, config = time.perf_counter(), Phases(), spec.tier(case.tier)
    with phase("load"):
        data = load_data(spec, case.tier)
        base = cache.pretrained(spec, case.tier, config.pretrain_seed(case.seed), data, env.cache_dir)
        units = quantize.units_of(base.model)
    if len(units) != spec.num_units:
        raise ValueError(f"{spec.name}: built model has {len(units)} units, spec says {spec.num_units}")
    # scores' seconds are in their record field, not in phase_s
    selected, bits_of, sensitivity, plan_field, plan_size = _selected(case, base, units, data)
    chosen, kept_float = quantize.without_unsupported(base.model, selected, case.quant, spec.keep_unsupported_float)
    with phase("float_control"):
        control = _float_control(case, config, data, base, env, tuner)
    with phase("qat_fit"):
        qat, qat_stats = _quantized_model(case, chosen, control, base, config, data, tuner, bits_of)
    if tuner is not None and not tuner.is_chief:
        return {}
    with phase("convert"):
        qat_tflite = _convert(case, units, chosen, control, qat, data)
    with phase("audit"):
        qat_audit, control_audit = audit.inspect(qat_tflite), audit.inspect(control.tflite)
    with phase("eval"):
        accuracy = _accuracy_fields(case, control, None if case.quant.method == "ptq" else qat, qat_tflite, data, env)
    with phase("step_timing"):
        timing = _timing_fields(case, config, data, qat, qat_stats, control, tuner)
    with phase("latency"):  # batch-1 LiteRT, quantized vs control side by side (harness/case/latency.py)
        timing.update(latency.fields(qat_tflite, control.tflite, data.x_test, latency.enabled(env.latency)))
    predicted = plan_size or size.predict(units, chosen, case.quant)
    record = {**_selection_fields(spec, units, chosen, base), **accuracy,
              **_size_fields(qat_tflite, control.tflite, qat_audit, control_audit, predicted), **timing,
              "convert_s": phase.seconds["convert"], "wall_s": time.perf_counter() - start,
              "phase_s": {name: round(seconds, 3) for name, seconds in phase.seconds.items()},
              "dataset": data.describe(), "kept_float_layers": [f"{name} ({cls})" for name, cls in kept_float],
              "boundary_fixes": quantize.fixed_producers(chosen),
              "sensitivity": sensitivity, "mixed_plan": plan_field}
    if tuner is not None:
        record.update(tuner.fields(units, chosen, case.quant, qat_audit, len(qat_tflite), len(control.tflite)))
    return record
