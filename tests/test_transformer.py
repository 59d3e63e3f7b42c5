"""Real TensorFlow: the BERT-class encoder, its MiniLM weights, what its units convert to, and
that the pre-trained weights are worth loading."""

import math

import numpy as np
import pytest

from harness.case import audit, export, quantize, train
from harness.design import size
from harness.models import text_data, transformer as T
from harness.design.config import QuantConfig, Selection
from harness.design.select import select

pytestmark = pytest.mark.tf

TINY = T.EncoderConfig(layers=2, hidden=64, heads=4, ffn=128, vocab=1000, max_positions=32)


@pytest.fixture(scope="module")
def minilm2():
    return T.build_minilm_2layer((64,), 5)


@pytest.fixture(scope="module")
def tensors():
    return T.read_safetensors(text_data.minilm_files().safetensors)


def token_batch(n=4, seq=64, vocab=30522, seed=0):
    ids = np.random.default_rng(seed).integers(110, vocab, (n, seq)).astype("int32")  # above [CLS]/[SEP]
    ids[:, 0] = 101
    for row, length in enumerate(np.linspace(seq // 3, seq, n).astype(int)):
        ids[row, length - 1], ids[row, length:] = 102, 0
    return ids


def test_units_attention_ffn_per_layer_then_the_head(minilm2):
    units = quantize.units_of(minilm2)
    assert [u.kind for u in units] == ["attention", "ffn", "attention", "ffn", "dense"]
    assert [u.kernels for u in units] == [4, 2, 4, 2, 1]
    assert units[0].members == ("embeddings", "padding_mask", "attention_0")
    assert units[1].members == ("attention_0_residual", "attention_0_norm", "ffn_0")
    assert units[4].members == ("ffn_1_residual", "ffn_1_norm", "pool", "head")
    assert (units[0].kernel_params, units[0].bias_params) == (4 * 384 * 384, 4 * 384)
    assert (units[1].kernel_params, units[1].bias_params) == (2 * 384 * 1536, 1536 + 384)
    assert T.build_encoder(T.MINILM, (128,), 5, "m").count_params() > 22_000_000  # all 6 layers


def test_weights_are_the_safetensors_numbers(minilm2, tensors):
    assert T.pretrained_from(minilm2).endswith("model.safetensors")
    att, ffn = minilm2.get_layer("attention_1"), minilm2.get_layer("ffn_0")
    np.testing.assert_array_equal(minilm2.get_layer("embeddings").word.numpy(),
                                  tensors["embeddings.word_embeddings.weight"])
    np.testing.assert_array_equal(att.query.kernel.numpy(), tensors["encoder.layer.1.attention.self.query.weight"].T)
    np.testing.assert_array_equal(att.out.bias.numpy(), tensors["encoder.layer.1.attention.output.dense.bias"])
    np.testing.assert_array_equal(ffn.out.kernel.numpy(), tensors["encoder.layer.0.output.dense.weight"].T)
    np.testing.assert_array_equal(minilm2.get_layer("ffn_1_norm").gamma.numpy(),
                                  tensors["encoder.layer.1.output.LayerNorm.weight"])


def reference_pooled(tensors, ids, layers, heads, eps=1e-12):
    """all-MiniLM-L6-v2's mean-pooled embedding computed in numpy from the checkpoint."""
    def w(name):
        return tensors[name].astype(np.float64)

    def norm(x, prefix):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * w(prefix + ".weight") + w(prefix + ".bias")

    def linear(x, prefix):
        return x @ w(prefix + ".weight").T + w(prefix + ".bias")

    erf = np.vectorize(math.erf)
    batch, seq = ids.shape
    mask = (ids != 0).astype(np.float64)
    x = w("embeddings.word_embeddings.weight")[ids] + w("embeddings.position_embeddings.weight")[:seq]
    x = norm(x + w("embeddings.token_type_embeddings.weight")[0], "embeddings.LayerNorm")
    for i in range(layers):
        p = f"encoder.layer.{i}."
        q, k, v = (linear(x, p + f"attention.self.{n}").reshape(batch, seq, heads, -1).transpose(0, 2, 1, 3)
                   for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]) + (1 - mask[:, None, None, :]) * -10000.0
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, -1)
        x = norm(x + linear(context, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        h = linear(x, p + "intermediate.dense")
        h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
        x = norm(x + linear(h, p + "output.dense"), p + "output.LayerNorm")
    return (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)


def test_the_encoder_computes_what_the_checkpoint_means(minilm2, tensors):
    """Post-LayerNorm BERT, exact gelu, padding masked out of attention and of the mean pool."""
    from harness.backend import keras

    ids = token_batch()
    pooled = keras.Model(minilm2.input, minilm2.get_layer("pool").output).predict(ids, verbose=0)
    np.testing.assert_allclose(pooled, reference_pooled(tensors, ids, layers=2, heads=12), atol=2e-4)


def tiny_checkpoint(model, layers):
    return {name: np.ascontiguousarray(var.numpy().T if transpose else var.numpy())
            for name, var, transpose in T.bert_weight_map(model, layers)}


def test_a_checkpoint_round_trips_and_a_wrong_shape_is_named(tmp_path):
    from safetensors.numpy import save_file

    source, target = (T.build_encoder(TINY, (16,), 3, name) for name in ("a", "b"))
    good = tiny_checkpoint(source, TINY.layers)
    save_file({"bert." + k: v for k, v in good.items()}, str(tmp_path / "good.safetensors"))  # prefix allowed
    T.load_bert_weights(target, tmp_path / "good.safetensors", TINY.layers)
    np.testing.assert_array_equal(target.get_layer("ffn_1").intermediate.kernel.numpy(),
                                  source.get_layer("ffn_1").intermediate.kernel.numpy())
    bad = dict(good, **{"encoder.layer.1.attention.self.key.weight": np.zeros((64, 48), np.float32)})
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"'encoder\.layer\.1\.attention\.self\.key\.weight' has shape "
                                         r"\(64, 48\), the model needs \(64, 64\)"):
        T.load_bert_weights(target, tmp_path / "bad.safetensors", TINY.layers)
    del good["encoder.layer.0.output.LayerNorm.bias"]
    save_file(good, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match=r"'encoder\.layer\.0\.output\.LayerNorm\.bias' is missing"):
        T.load_bert_weights(target, tmp_path / "missing.safetensors", TINY.layers)


def test_bert_mini_is_random_unless_the_env_names_weights(monkeypatch):
    monkeypatch.delenv(T.BERT_MINI_ENV, raising=False)
    assert T.pretrained_from(T.build_bert_mini((32,), 5)) is None
    monkeypatch.setenv(T.BERT_MINI_ENV, str(text_data.minilm_files().safetensors))  # hidden 384, not 256
    with pytest.raises(ValueError, match=r"'embeddings\.word_embeddings\.weight' has shape \(30522, 384\), "
                                         r"the model needs \(30522, 256\)"):
        T.build_bert_mini((32,), 5)


def convert(model, chosen, bits):
    """Annotate, one training step (ranges leave their [-6, 6] start), convert, audit."""
    quant = QuantConfig(bits)
    qat = quantize.annotate(model, chosen, quant)
    train.compile_for_training(qat, 1e-4)
    qat.train_on_batch(token_batch(8, model.input_shape[1], TINY.vocab), np.arange(8) % 3)
    return audit.inspect(export.to_tflite(qat, quantized=True, quant=quant))


@pytest.fixture(scope="module")
def tiny():
    train.set_seed(0)
    return T.build_encoder(TINY, (16,), 3, "tiny")


@pytest.mark.parametrize("bits,dtype", [(8, "INT8"), (4, "INT4")])
def test_the_last_attention_unit_converts_to_exactly_its_four_kernels(tiny, bits, dtype):
    units = quantize.units_of(tiny)
    chosen = select(units, Selection("single", 2))
    report = convert(tiny, chosen, bits)
    assert report.kernel_dtypes == {"FLOAT32": 9, dtype: 4}
    quantized = sorted(k.name for k in report.kernels if k.quantized)
    assert all("attention_1/" in name for name in quantized)
    assert {name.split("/")[-3] for name in quantized} == {"query", "key", "value", "output"}
    assert all(k.compute_dtype == dtype and k.bias_dtype == "INT32" for k in report.kernels if k.quantized)
    predicted = size.predict(units, chosen, QuantConfig(bits))
    assert predicted.quantized_kernels == report.quantized_kernels == 4
    assert predicted.weight_bytes == report.weight_bytes


def test_every_unit_selected_quantizes_every_kernel_but_not_the_embeddings(tiny):
    units = quantize.units_of(tiny)
    report = convert(tiny, units, 8)
    assert report.kernel_dtypes == {"INT8": 13}
    assert size.predict(units, units, QuantConfig(8)).weight_bytes == report.weight_bytes


@pytest.mark.slow
def test_pretrained_minilm_beats_random_init_after_the_same_short_fine_tune(record_property):
    """2-layer truncation, seq 64, 400 articles, 60 steps of batch 16 at lr 1e-4 (word table frozen in both).
    Measured: pre-trained 0.944, random init 0.234 (0.491 if the word table is trainable in both)."""
    data = text_data.bbc_news_64(train_size=400, test_size=None)
    accuracy = {}
    for name, builder in (("pretrained", T.build_minilm_2layer), ("random", T.build_minilm_random)):
        train.set_seed(0)
        model = builder((64,), data.num_classes)
        train.compile_for_training(model, 1e-4)
        train.fit_steps(model, data, steps=60, batch_size=16, seed=0)
        accuracy[name] = train.keras_accuracy(model, data.x_test, data.y_test)
    record_property("bbc_test_accuracy", accuracy)
    print("BBC News test accuracy after 60 steps:", accuracy)
    assert accuracy["pretrained"] >= 0.85, accuracy
    assert accuracy["pretrained"] - accuracy["random"] >= 0.25, accuracy
