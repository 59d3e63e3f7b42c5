"""The one record factory of the tests (also a fixture, ``make_record``, in tests/conftest.py)."""

from harness.results import records, schema


def make_record(**fields) -> dict:
    """A schema-valid record of a passed plain case (mlp-like numbers), ``fields`` overriding any key.
    The case id follows the fields unless given."""
    record = records.base_record("", "hash", {}, env={})
    record.update(status="passed", model="m", order="last", n=5, kind=None, weight_bits=8, activation_bits=8,
                  method="qat", deployment="int8", tier="smoke", seed=0, strategy="default", units_total=5,
                  param_fraction=1.0, control_accuracy=0.95, quant_accuracy=0.95, quant_accuracy_keras=0.95,
                  accuracy_drop_pp=0.0, n_test=1000, tflite_bytes=100, control_tflite_bytes=400,
                  weight_bytes=100, control_weight_bytes=380, predicted_weight_bytes=100, size_error_rel=0.0,
                  quantized_kernels=5, selected_kernels=5, audit={"kernel_dtypes": {"INT8": 5}}, violations=[])
    record.update(fields)
    if "case_id" not in fields:
        seed = record["seed"]
        record["case_id"] = (f"{record['model']}-{record['order']}{record['n']}-w{record['weight_bits']}a8"
                             + (f"-s{seed}" if seed else ""))
    if "config_hash" not in fields:
        record["config_hash"] = f"hash-{record['case_id']}"
    assert schema.problems(record) == [], schema.problems(record)
    return record
