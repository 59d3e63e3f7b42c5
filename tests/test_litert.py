"""LiteRT (ai-edge-litert) is the measuring runtime: it must agree with tf.lite on the small zoo models,
and a model LiteRT cannot load or run must still be scored, in tf.lite, saying so.

Each model is random-initialised, annotated whole-model at W8 and W4, trained 2 steps (so the
fake-quant ranges leave their start values) and converted. minilm2 keeps its architecture (2 layers,
hidden 384, 12 heads, FFN 1536) with a 2,000-word table instead of 30,522: the word table stays float
either way, and the small one converts in a third of the time.
"""

import functools

import numpy as np
import pytest

from harness.case import evaluate, export, quantize, train
from harness.backend import tf
from harness.models import transformer, zoo
from harness.models.data import Dataset
from harness.models.text_data import PAD_ID
from harness.design.config import QuantConfig

pytestmark = pytest.mark.tf

EXAMPLES = 64
CLASSES = {"mlp": 10, "cnn": 10, "resnet20": 10, "minilm2": 5}
MINILM2_SMALL = transformer.EncoderConfig(2, 384, 12, 1536, vocab=2000)


def inputs(model: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    if model == "minilm2":
        ids = rng.integers(PAD_ID + 1, MINILM2_SMALL.vocab, (EXAMPLES, 64)).astype(np.int32)
        ids[:, 40:] = PAD_ID  # padded tails exercise the attention mask
        return ids
    shape = {"mlp": (28, 28), "cnn": (28, 28, 1), "resnet20": (32, 32, 1)}[model]
    return rng.random((EXAMPLES, *shape), dtype=np.float32)


def build(model: str):
    if model == "minilm2":
        return transformer.build_encoder(MINILM2_SMALL, (64,), CLASSES[model], "minilm_2layer_small")
    return {"mlp": zoo.build_mlp, "cnn": zoo.build_cnn, "resnet20": zoo.build_resnet20}[model]()


@functools.lru_cache(maxsize=None)
def qat_tflite(model: str, bits: int) -> bytes:
    """Whole-model QAT .tflite of ``model`` at ``bits``, after 2 training steps."""
    x = inputs(model)
    y = np.arange(EXAMPLES) % CLASSES[model]
    data = Dataset("random", x, y, x, y, CLASSES[model], "random inputs")
    train.set_seed(0)
    base = build(model)
    qat = quantize.annotate(base, quantize.units_of(base), QuantConfig(bits))
    train.compile_for_training(qat, 1e-3)
    train.fit_steps(qat, data, steps=2, batch_size=16, seed=0)
    return export.to_tflite(qat, quantized=True, quant=QuantConfig(bits))


def reference_outputs(interpreter_class, resolvers, content: bytes, x: np.ndarray) -> np.ndarray:
    """Outputs with the default delegates (XNNPACK) off: the runtime's own reference kernels."""
    interp = interpreter_class(model_content=content, num_threads=1,
                               experimental_op_resolver_type=resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    detail = interp.get_input_details()[0]
    interp.resize_tensor_input(detail["index"], x.shape)
    interp.allocate_tensors()
    interp.set_tensor(detail["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


def output_step(outputs: np.ndarray) -> float:
    """The spacing of the output grid: whole-model QAT files end in an int8 tensor, dequantized."""
    levels = np.unique(outputs)
    return float(np.min(np.diff(levels)))


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("model", ["mlp", "cnn", "resnet20", "minilm2"])
def test_litert_and_tflite_predict_the_same_labels(model, bits):
    content, x = qat_tflite(model, bits), inputs(model)
    litert = evaluate.run_in(evaluate.LITERT, content, x)
    tflite = evaluate.run_in(evaluate.TFLITE, content, x)
    assert litert.shape == tflite.shape == (EXAMPLES, CLASSES[model])
    step, diff = output_step(tflite), np.abs(litert - tflite)
    top2 = np.sort(tflite, axis=-1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * step  # no rounding of one output step each way can flip these
    mismatched = litert.argmax(-1) != tflite.argmax(-1)
    print(f"{model} W{bits}: max |LiteRT - tf.lite| = {diff.max():.4f} ({diff.max() / step:.0f} output steps), "
          f"{int(mismatched.sum())}/{EXAMPLES} labels differ, {int((~clear).sum())} near-ties")
    # the XNNPACK of LiteRT 2.3.0 and of tf.lite 2.21 round some kernels differently (INT4 fully-connected,
    # the encoder's int8 ops), so outputs may differ by a step or two; anything more is another computation
    assert diff.max() <= 2 * step + 1e-6
    assert not mismatched[clear].any()
    if bits == 8:  # W8 kernels round alike in both: the labels agree on every example
        assert not mismatched.any()


@pytest.mark.parametrize("model", ["mlp", "minilm2"])
def test_without_xnnpack_litert_and_tflite_compute_the_same_bits(model):
    """Where the two runtimes differ, it is their XNNPACK delegates, not the model's semantics."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    for bits in (8, 4):
        content, x = qat_tflite(model, bits), inputs(model)
        np.testing.assert_array_equal(reference_outputs(Interpreter, OpResolverType, content, x),
                                      reference_outputs(tf.lite.Interpreter, tf.lite.experimental.OpResolverType,
                                                        content, x))


def test_labels_name_litert_and_its_version():
    import ai_edge_litert

    content, x = qat_tflite("mlp", 8), inputs("mlp")
    labels = evaluate.tflite_labels(content, x)
    assert labels.runtime == f"ai-edge-litert {ai_edge_litert.__version__}"
    np.testing.assert_array_equal(labels, evaluate.run_in(evaluate.LITERT, content, x).argmax(-1))
    # the runtime rides along with what is computed from the labels; np.asarray is what records store
    assert (labels == 0).runtime == labels.runtime and labels[:3].runtime == labels.runtime
    assert type(np.asarray(labels)) is np.ndarray


def failing_loader(content, threads):
    raise RuntimeError("injected: LiteRT cannot load this model\nsecond line of detail")


class InvokeFails:
    """A real LiteRT interpreter whose invoke fails: LiteRT loads the model but cannot run it."""

    def __init__(self, content, threads):
        self._interp = evaluate._litert_interpreter(content, threads)

    def __getattr__(self, name):
        return getattr(self._interp, name)

    def invoke(self):
        raise ValueError("injected: LiteRT invoke failed")


@pytest.mark.parametrize("loader,reason", [
    (failing_loader, "RuntimeError: injected: LiteRT cannot load this model"),
    (InvokeFails, "ValueError: injected: LiteRT invoke failed"),
])
def test_a_model_litert_cannot_load_or_run_is_scored_in_tflite_and_says_why(monkeypatch, loader, reason):
    content, x = qat_tflite("mlp", 8), inputs("mlp")
    expected = evaluate.run_in(evaluate.TFLITE, content, x).argmax(-1)
    monkeypatch.setitem(evaluate.LOADERS, evaluate.LITERT, loader)
    labels = evaluate.tflite_labels(content, x)
    np.testing.assert_array_equal(labels, expected)
    assert labels.runtime == f"tf.lite {tf.__version__} (LiteRT failed: {reason})"  # one line
    y = np.arange(EXAMPLES) % 10
    assert evaluate.tflite_accuracy(content, x, y) == pytest.approx(float(np.mean(expected == y)))


def test_an_input_the_harness_cannot_feed_is_not_a_runtime_failure(monkeypatch):
    class Uint8Input:
        def __init__(self, content, threads):
            pass

        def get_input_details(self):
            return [{"dtype": np.uint8, "index": 0}]

    def must_not_fall_back(content, threads):
        raise AssertionError("fell back to tf.lite for an input error")

    monkeypatch.setitem(evaluate.LOADERS, evaluate.LITERT, Uint8Input)
    monkeypatch.setitem(evaluate.LOADERS, evaluate.TFLITE, must_not_fall_back)
    with pytest.raises(evaluate.InputError, match="uint8"):
        evaluate.tflite_predict(b"unused", np.zeros((2, 4), np.float32))
