"""Real TensorFlow: what the converter really stores, and that the audit sees it."""

import numpy as np
import pytest

from harness.case import audit, export, quantize
from harness.models import zoo
from harness.design.config import QuantConfig, Selection
from harness.design.select import select
from harness.design.units import Unit

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def mlp():
    return zoo.build_mlp()


@pytest.fixture(scope="module")
def units(mlp):
    return quantize.units_of(mlp)


def test_units_of_the_mlp(units):
    assert [u.weight_layer for u in units] == ["dense_1", "dense_2", "dense_3", "dense_4", "logits"]
    assert units[2].members == ("dropout", "dense_3")
    assert sum(u.params for u in units) == 784 * 128 + 128 + 128 * 256 + 256 + 256 * 128 + 128 + 128 * 128 + 128 + 1290


def test_n0_converted_without_optimizations_stays_float(mlp):
    report = audit.inspect(export.to_tflite(mlp, quantized=False))
    assert report.kernel_dtypes == {"FLOAT32": 5} and report.quantized_kernels == 0


def test_optimize_default_on_a_float_model_silently_makes_int8(mlp):
    """The trap N = 0 avoids: DEFAULT dynamic-range quantizes every large kernel."""
    report = audit.inspect(export.to_tflite(mlp, quantized=True))
    assert report.kernel_dtypes == {"INT8": 5}


def convert_selected(mlp, chosen, bits):
    qat = quantize.annotate(mlp, chosen, QuantConfig(bits))
    x = np.random.default_rng(0).random((32, 28, 28), dtype=np.float32)
    qat.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    qat.train_on_batch(x, np.zeros(32, dtype=np.int64))  # ranges leave their [-6, 6] start
    return audit.inspect(export.to_tflite(qat, quantized=True, quant=QuantConfig(bits)))


@pytest.mark.parametrize("bits,dtype", [(8, "INT8"), (4, "INT4")])
def test_a_unit_with_its_dropout_quantizes_the_dense_behind_it(mlp, units, bits, dtype):
    chosen = select(units, Selection("last", 3))
    report = convert_selected(mlp, chosen, bits)
    assert report.quantized_kernels == 3
    by_name = {k.name: k.dtype for k in report.kernels}
    assert [d for n, d in by_name.items() if "dense_3" in n] == [dtype]


def test_the_audit_catches_a_dense_left_float_behind_an_unannotated_dropout(mlp, units, monkeypatch):
    """Annotated, yet FLOAT32 in the file: the audit must fail it. (Since the boundary fix, annotate
    gives such a Dropout an output quantizer itself; without the fix the failure is back.)"""
    naive = (Unit(2, "dense", "dense_3", ("dense_3",), units[2].kernel_params, units[2].bias_params),)
    assert convert_selected(mlp, naive, 8).quantized_kernels == 1  # with the boundary fix
    monkeypatch.setattr(quantize, "boundary_fixes", lambda *args: ())
    assert convert_selected(mlp, naive, 8).quantized_kernels == 0


def test_weight_bytes_match_the_prediction(mlp, units):
    from harness.design.size import predict

    chosen = select(units, Selection("last", 2))
    report = convert_selected(mlp, chosen, 4)
    assert report.weight_bytes == predict(units, chosen, QuantConfig(4)).weight_bytes
    assert report.bytes_by_dtype["INT4"] == sum((u.kernel_params + 1) // 2 for u in chosen)


def while_loop_tflite():
    """Three subgraphs (main, while_cond, while_body); the body's kernel equals one of main's, so
    the converter's buffer deduplication makes both subgraphs reference the same buffer."""
    from harness.backend import tf

    rng = np.random.default_rng(0)
    w0, w1 = (rng.normal(size=(8, 8)).astype(np.float32) for _ in range(2))

    @tf.function(input_signature=[tf.TensorSpec((1, 8), tf.float32)])
    def f(x):
        def body(i, h):
            return i + 1, tf.nn.relu(tf.matmul(h, w1) + tf.constant(np.arange(8, dtype=np.float32)))

        _, h = tf.while_loop(lambda i, h: i < 3, body, (tf.constant(0), tf.matmul(x, w0) + 1.0))
        return tf.matmul(h, w1)

    return bytes(tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert())


def independent_count(content):
    """Bytes of every distinct constant buffer, and of those feeding a FULLY_CONNECTED as kernel or
    bias, over all subgraphs; plus how many subgraphs reference each buffer."""
    from harness.backend import tflite_schema as S

    model = S.Model.GetRootAs(content, 0)
    size = lambda b: model.Buffers(b).DataLength()  # noqa: E731
    constant, weights, users = set(), set(), {}
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for t in range(graph.TensorsLength()):
            b = graph.Tensors(t).Buffer()
            if size(b):
                constant.add(b)
                users.setdefault(b, set()).add(g)
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            if model.OperatorCodes(op.OpcodeIndex()).BuiltinCode() == S.BuiltinOperator.FULLY_CONNECTED:
                weights.update(graph.Tensors(int(t)).Buffer() for t in op.InputsAsNumpy()[1:3] if t >= 0)
    weights &= constant
    return sum(map(size, constant)), sum(map(size, weights)), users


def test_every_subgraph_is_audited_with_its_own_tensors_and_shared_buffers_count_once():
    content = while_loop_tflite()
    total, weights, users = independent_count(content)
    assert max(map(len, users.values())) > 1  # the case under test: one buffer, two subgraphs
    report = audit.inspect(content)
    assert [k.subgraph for k in report.kernels] == [0, 0, 2]
    assert sum(report.bytes_by_dtype.values()) == total
    assert report.weight_bytes == weights
    assert report.other_const_bytes == total - weights
    assert report.bytes_by_dtype["INT32"] == 3 * 4  # loop counter start, bound and step: one per subgraph
