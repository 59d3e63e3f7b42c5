"""The record schema, declared once as typed groups. Pure: no TensorFlow.

Every key a case record may hold is declared here with its JSON types and the schema version that
added it. ``records.SCHEMA_VERSION`` and the migration table ``records.ADDED_IN`` are derived from
it, a test checks ``records.SUMMARY_COLUMNS`` and the field reference in docs/results.md and
docs/distributed.md against it, and ``problems(record)`` lists the keys of a record that the schema
does not know or whose type is wrong (tests run it on records of real runs).
"""

from __future__ import annotations

from dataclasses import dataclass

NUMBER = ("int", "float")


@dataclass(frozen=True)
class Field:
    name: str
    types: tuple  # JSON types: "str", "int", "float", "bool", "list", "dict"; null is always allowed
    since: int = 1  # the schema version that added the field


def _fields(types, *names, since: int = 1) -> tuple:
    types = (types,) if isinstance(types, str) else tuple(types)
    return tuple(Field(name, types, since) for name in names)


GROUPS = {
    "schema": _fields("int", "schema_version", "migrated_from"),
    "case": (_fields("str", "case_id", "model", "order", "kind", "method", "deployment", "tier", "strategy",
                     "run_id", "created", "config_hash", "spec_fingerprint")
             + _fields("int", "n", "weight_bits", "activation_bits", "seed", "workers", "devices")
             + _fields("bool", "per_channel")),
    "outcome": (_fields("str", "status", "error", "predictions_error") + _fields("list", "violations")
                + _fields("dict", "baseline")),
    "environment": _fields("dict", "env", "dataset") + _fields("str", "initial_weights"),
    "selection": (_fields("int", "units_total", "selected_kernels", "quantized_kernels")
                  + _fields("list", "units_selected", "selected_layers") + _fields(NUMBER, "param_fraction")
                  + _fields("list", "unit_table", since=2) + _fields("list", "kept_float_layers", since=3)
                  + _fields("dict", "sensitivity", since=3) + _fields("dict", "mixed_plan", since=4)
                  + _fields("list", "boundary_fixes", since=6)),
    "accuracy": (_fields(NUMBER, "control_accuracy", "quant_accuracy", "accuracy_drop_pp", "control_accuracy_keras",
                         "quant_accuracy_keras", "pretrained_accuracy", "qat_final_loss", "float_final_loss")
                 + _fields("str", "accuracy_source")
                 + _fields("int", "n_test", since=2) + _fields("dict", "discordant", since=2)
                 + _fields(NUMBER, "paired_drop_pp", "mcnemar_p", since=2) + _fields("list", "drop_ci95_pp", since=2)
                 + _fields("bool", "drop_within_noise", since=2)
                 + _fields("str", "predictions_file", "predictions_sha256", since=2)
                 + _fields("str", "tflite_runtime", since=3)
                 # tie-aware accuracy (harness/case/paired.py): what a device's argmax gives, and how many
                 # test examples tie for the top score in each model
                 + _fields(NUMBER, "control_accuracy_deployed", "quant_accuracy_deployed", "deployed_drop_pp",
                           since=6)
                 + _fields("int", "control_ties", "quant_ties", since=6)),
    "size": (_fields("int", "tflite_bytes", "control_tflite_bytes", "gzip_bytes", "control_gzip_bytes",
                     "weight_bytes", "control_weight_bytes", "predicted_weight_bytes", "predicted_float_bytes",
                     "ideal_packed_bytes", "overhead_bytes", "quant_param_values")
             + _fields(NUMBER, "size_error_rel") + _fields("dict", "audit", "control_audit")
             + _fields("str", "tflite_sha256", "tflite_file", "tflite_error", since=6)),
    "training": (_fields("int", "finetune_steps", "ptq_samples") + _fields("bool", "pretrained_cached", "control_cached")
                 + _fields("str", "control_key") + _fields("str", "train_step", since=5)
                 + _fields("str", "pretrain_recipe", since=7)),  # harness/case/pretrain.py Resolved.text
    "timing": (_fields(NUMBER, "qat_step_ms", "float_step_ms", "step_ratio", "qat_fit_step_ms", "float_fit_step_ms",
                       "qat_fit_s", "float_fit_s", "convert_s", "wall_s", "pretrain_s")
               + _fields("dict", "phase_s")),
    # batch-1 LiteRT latency of the quantized file over its control, interleaved (harness/case/latency.py)
    "latency": (_fields(NUMBER, "latency_quant_ms", "latency_control_ms", "latency_ratio", since=6)
                + _fields("list", "latency_ratio_ci95", since=6)
                + _fields("int", "latency_rounds", "latency_invokes", "latency_threads", "quantize_ops",
                          "dequantize_ops", since=6)
                + _fields("str", "latency_runtime", since=6)),
    "distributed": (_fields("str", "allreduce_transport", "measured_note", "step_time_note", "shard_policy")
                    + _fields("int", "trainable_params", "worker_threads")
                    + _fields(NUMBER, "allreduce_bytes_per_step_per_worker_predicted",
                              "allreduce_bytes_per_step_predicted", "allreduce_bytes_predicted",
                              "loopback_bytes_measured", "loopback_bytes_per_step_measured", "measured_over_predicted",
                              "control_allreduce_bytes_predicted", "control_loopback_bytes_measured",
                              "payload_float_tflite_bytes", "payload_model_float_bytes", "payload_tflite_bytes",
                              "payload_units_bytes", "payload_units_float_bytes", "payload_units_predicted_bytes",
                              "launch_s", "chief_wall_s")
                    + _fields("bool", "measured_valid")
                    + _fields("dict", "quantizer_sync", "replica_weight_digests", "replicas_identical",
                              "workers_identical")
                    + _fields("list", "worker_weight_digests", "worker_wall_s")),
}

FIELDS = {f.name: f for group in GROUPS.values() for f in group}
VERSION = max(f.since for f in FIELDS.values())
_PYTHON_TYPES = {"str": (str,), "int": (int,), "float": (float, int), "bool": (bool,), "list": (list, tuple),
                 "dict": (dict,)}


def added_in() -> dict:
    """{version: names added in it} for every version after 1: what a migration fills with null."""
    found: dict = {}
    for f in FIELDS.values():
        if f.since > 1:
            found.setdefault(f.since, []).append(f.name)
    return {version: tuple(names) for version, names in sorted(found.items())}


def group_of(name: str) -> str:
    return next(group for group, fields in GROUPS.items() if any(f.name == name for f in fields))


def _type_ok(value, types: tuple) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):  # bool is an int in Python, not in the schema
        return "bool" in types
    return any(isinstance(value, _PYTHON_TYPES[t]) for t in types)


def problems(record: dict) -> list:
    """One line per key the schema does not declare, or whose value has an undeclared type."""
    found = []
    for name, value in record.items():
        field = FIELDS.get(name)
        if field is None:
            found.append(f"{name}: not in the record schema (harness/results/schema.py)")
        elif not _type_ok(value, field.types):
            found.append(f"{name}: {type(value).__name__} where the schema says {'/'.join(field.types)}")
    return found


# Values readers rely on beyond their JSON type (issue 29): a record breaking one is skipped with
# one line by every reader (records.usable), so one edited or damaged record cannot stop a merge,
# a report or a resumed session. (low, high) are inclusive; pairs are [low, high] intervals.
UNIT_INTERVAL = ("control_accuracy", "quant_accuracy", "quant_accuracy_keras", "control_accuracy_keras",
                 "pretrained_accuracy", "param_fraction", "mcnemar_p", "control_accuracy_deployed",
                 "quant_accuracy_deployed")
RANGES = {**{name: (0.0, 1.0) for name in UNIT_INTERVAL},
          "accuracy_drop_pp": (-100.0, 100.0), "paired_drop_pp": (-100.0, 100.0), "deployed_drop_pp": (-100.0, 100.0),
          "control_ties": (0, 10 ** 12), "quant_ties": (0, 10 ** 12),
          "weight_bits": (2, 8), "n_test": (1, 10 ** 12), "n": (0, 10 ** 12), "seed": (0, 2 ** 32 - 1),
          **{name: (0, 10 ** 15) for name in ("tflite_bytes", "control_tflite_bytes", "gzip_bytes", "weight_bytes",
                                              "predicted_weight_bytes", "ideal_packed_bytes", "units_total",
                                              "quantized_kernels", "selected_kernels")}}
PAIRS = {"drop_ci95_pp": (-100.0, 100.0)}


def _finite(value) -> bool:
    """No NaN or infinity anywhere in a value (JSON has neither; Python's json reads and writes them)."""
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def value_problem(record: dict):
    """The first declared-type, range or non-finite problem of a record's values (one line), or None.
    Keys the schema does not declare are left to ``problems`` (a newer writer may add some)."""
    for name, value in record.items():
        field = FIELDS.get(name)
        if field is not None and not _type_ok(value, field.types):
            return f"{name} is a {type(value).__name__}, not {'/'.join(field.types)}"
        if not _finite(value):
            return f"{name} holds a NaN or infinite number"
        low_high = RANGES.get(name)
        if low_high and value is not None and not low_high[0] <= value <= low_high[1]:
            return f"{name} {value!r} is outside {low_high[0]}..{low_high[1]}"
        if name in PAIRS and value is not None and not (
                len(value) == 2 and all(_number(v) and PAIRS[name][0] <= v <= PAIRS[name][1] for v in value)):
            return f"{name} {str(value)[:60]} is not an interval of two numbers in {PAIRS[name][0]}..{PAIRS[name][1]}"
    return None
