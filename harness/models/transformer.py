"""A BERT-class text encoder in tf_keras, built from quantizable blocks, with real MiniLM weights.

Graph (post-LayerNorm BERT, gelu, LayerNorm eps 1e-12), every layer explicitly named:

    token_ids (int32) -> embeddings (word + position + token type, LayerNorm)   float
                      -> padding_mask (ids != 0)                                 float
    per layer i:  attention_i([h, mask]) -> attention_i_residual -> attention_i_norm
                  ffn_i(h)               -> ffn_i_residual       -> ffn_i_norm
    pool([h, mask]) (mean over real tokens) -> head (Dense, logits)

Units (what N counts): attention_i and ffn_i (one QatBlock each: 4 and 2 kernels) and the Dense
head, i.e. 2 * layers + 1. The float helper layers become members of the unit behind them. They
carry ``qat_float = True`` (annotate should leave them alone: annotating the embeddings, which read
the int32 input, makes tfmot fake-quantize the token ids) and, until annotate honours that, a
QuantizeConfig that quantizes nothing; the pool's config quantizes its output at 8 bits so that the
head's FULLY_CONNECTED gets a quantized input.

The attention block takes [hidden, mask] as one list input (like Add): QuantizeWrapper passes a
single call argument through, and it does not support Keras' implicit mask propagation.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from harness.backend import keras, quantize, tf
from harness.models.bert_weights import bert_weight_map, load_bert_weights, read_safetensors  # noqa: F401 (re-exported)
from harness.design.config import QuantConfig
from harness.models.quantizable import NoOpQuantizeConfig, QatBlock, UnsupportedQuantization, register_custom_object
from harness.models.text_data import PAD_ID, minilm_files

BERT_MINI_ENV = "QATBENCH_BERT_MINI_WEIGHTS"
_q = quantize.quantizers


@dataclass(frozen=True)
class EncoderConfig:
    layers: int
    hidden: int
    heads: int
    ffn: int
    vocab: int = 30522
    max_positions: int = 512
    type_vocab: int = 2
    eps: float = 1e-12


MINILM = EncoderConfig(layers=6, hidden=384, heads=12, ffn=1536)
BERT_MINI = EncoderConfig(layers=4, hidden=256, heads=4, ffn=1024)


def _init():
    return keras.initializers.TruncatedNormal(stddev=0.02)  # BERT's initializer_range


# ---- QuantizeConfigs ------------------------------------------------------------------------


FloatQuantizeConfig = NoOpQuantizeConfig  # quantizes nothing: embeddings, residual Add, LayerNorm


class OutputQuantizeConfig(FloatQuantizeConfig):
    """Only the layer's output, at 8 bits: the pool in front of the Dense head."""

    def get_output_quantizers(self, layer):
        return [_q.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]


class BlockQuantizeConfig(quantize.QuantizeConfig):
    """Every kernel of a block at ``bits`` (per-tensor, symmetric, narrow range), and at 8 bits the
    block's input hooks (``layer.HOOKS``) and every projection's output (its ``activation``): each
    projection then converts to a full-integer FULLY_CONNECTED (int8 in and out, int32 bias).
    Quantizing only inputs and kernels leaves float FULLY_CONNECTEDs with DEQUANTIZEd int8 kernels."""

    def __init__(self, bits: int = 8):
        self.bits = bits

    def get_weights_and_quantizers(self, layer):
        return [(dense.kernel, _q.LastValueQuantizer(num_bits=self.bits, per_axis=False, symmetric=True,
                                                     narrow_range=True)) for dense in layer.projections()]

    def set_quantize_weights(self, layer, quantize_weights):
        for dense, weight in zip(layer.projections(), quantize_weights):
            dense.kernel = weight

    def get_activations_and_quantizers(self, layer):
        return [(activation, _q.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                       narrow_range=False)) for activation in _activations(layer)]

    def set_quantize_activations(self, layer, quantize_activations):
        hooks = len(layer.HOOKS)
        for hook, activation in zip(layer.HOOKS, quantize_activations[:hooks]):
            setattr(layer, hook, activation)
        for dense, activation in zip(layer.projections(), quantize_activations[hooks:]):
            dense.activation = activation

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {"bits": self.bits}


def _activations(layer) -> list:
    return [getattr(layer, hook) for hook in layer.HOOKS] + [dense.activation for dense in layer.projections()]


def _block_config(quant: QuantConfig, name: str) -> BlockQuantizeConfig:
    if quant.per_channel:
        raise UnsupportedQuantization(f"{name}: per-channel weights are not implemented for transformer "
                                      "blocks (per-axis 4-bit does not convert); use per_channel=None")
    return BlockQuantizeConfig(quant.weight_bits)


# ---- layers ---------------------------------------------------------------------------------


class _Float:
    """A float helper layer: quantizes nothing when its unit is selected."""

    qat_float = True

    def qat_quantize_config(self, quant: QuantConfig):
        return FloatQuantizeConfig()


def _projection(units: int, name: str, activation=None):
    """A (in -> units) projection of a (batch, seq, in) tensor: converts to one FULLY_CONNECTED."""
    return keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, units), bias_axes="d",
                                    activation=activation, kernel_initializer=_init(), name=name)


def _build(sublayer, shape) -> None:
    """Build a sublayer under its own name scope: its variables become e.g. attention_0/query/kernel,
    not attention_0/kernel (duplicate names break save_weights to HDF5)."""
    with tf.name_scope(sublayer.name):
        sublayer.build(shape)


class TokenEmbeddings(_Float, keras.layers.Layer):
    """Word + position + token-type (all type 0) embeddings, then LayerNorm. Stays float.

    The word table (vocab x hidden, half of MiniLM's weights) is frozen unless ``train_words``:
    Adam's dense update of its 11.7M values doubled the 2-layer MiniLM step time."""

    def __init__(self, vocab, hidden, max_positions=512, type_vocab=2, eps=1e-12, train_words=False, **kwargs):
        super().__init__(**kwargs)
        self.vocab, self.hidden, self.max_positions = vocab, hidden, max_positions
        self.type_vocab, self.eps, self.train_words = type_vocab, eps, train_words
        self.norm = keras.layers.LayerNormalization(epsilon=eps, name="layer_norm")

    def build(self, input_shape):
        self.word = self.add_weight("word", (self.vocab, self.hidden), initializer=_init(), trainable=self.train_words)
        self.position = self.add_weight("position", (self.max_positions, self.hidden), initializer=_init())
        self.token_type = self.add_weight("token_type", (self.type_vocab, self.hidden), initializer=_init())
        _build(self.norm, tuple(input_shape) + (self.hidden,))
        super().build(input_shape)

    def call(self, ids):
        seq = ids.shape[1]
        x = tf.gather(self.word, ids) + self.position[:seq] + self.token_type[0]
        return self.norm(x)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(tuple(input_shape) + (self.hidden,))

    def get_config(self):
        return {**super().get_config(), "vocab": self.vocab, "hidden": self.hidden,
                "max_positions": self.max_positions, "type_vocab": self.type_vocab, "eps": self.eps,
                "train_words": self.train_words}


class PaddingMask(_Float, keras.layers.Layer):
    """1.0 for real tokens, 0.0 for padding (id 0)."""

    def call(self, ids):
        return tf.cast(tf.not_equal(ids, PAD_ID), tf.float32)


class Residual(_Float, keras.layers.Add):
    """The residual Add, kept float."""


class Norm(_Float, keras.layers.LayerNormalization):
    """The post-residual LayerNorm, kept float."""


class SelfAttention(QatBlock, keras.layers.Layer):
    """BERT self-attention with its output projection: one unit, four kernels (query, key, value, output).

    Input: [hidden (batch, seq, H), mask (batch, seq)]. Output: (batch, seq, H), before the residual."""

    HOOKS = ("input_act", "context_act")  # fake-quantized inputs of the projections when wrapped

    def __init__(self, hidden, heads, **kwargs):
        super().__init__(**kwargs)
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.hidden, self.heads = hidden, heads
        self.query, self.key, self.value, self.out = (_projection(hidden, n) for n in ("query", "key", "value", "output"))
        self.input_act = keras.activations.linear
        self.context_act = keras.activations.linear

    def projections(self) -> tuple:
        return self.query, self.key, self.value, self.out

    def build(self, input_shape):
        hidden_shape = tf.TensorShape(input_shape[0])
        for dense in self.projections():
            _build(dense, hidden_shape)
        super().build(input_shape)

    def _split(self, x, seq):
        x = tf.reshape(x, (-1, seq, self.heads, self.hidden // self.heads))
        return tf.transpose(x, (0, 2, 1, 3))  # (batch, heads, seq, head_dim)

    def call(self, inputs):
        hidden, mask = inputs
        seq = hidden.shape[1]
        x = self.input_act(hidden)
        q, k, v = (self._split(dense(x), seq) for dense in (self.query, self.key, self.value))
        scores = tf.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(self.hidden // self.heads))
        scores += (1.0 - mask[:, None, None, :]) * -10000.0
        context = tf.matmul(tf.nn.softmax(scores, axis=-1), v)
        context = tf.reshape(tf.transpose(context, (0, 2, 1, 3)), (-1, seq, self.hidden))
        return self.out(self.context_act(context))

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "heads": self.heads}

    def qat_unit(self) -> tuple:
        h = self.hidden
        return "attention", 4 * h * h, 4 * h, h, 4

    def qat_quantize_config(self, quant: QuantConfig):
        return _block_config(quant, self.name)


class FeedForward(QatBlock, keras.layers.Layer):
    """BERT intermediate (H -> F, gelu) and output (F -> H) projections: one unit, two kernels."""

    HOOKS = ("input_act",)

    def __init__(self, hidden, ffn, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.ffn = hidden, ffn
        self.intermediate = _projection(ffn, "intermediate", activation="gelu")  # exact (erf) gelu, as BERT
        self.out = _projection(hidden, "output")
        self.input_act = keras.activations.linear

    def projections(self) -> tuple:
        return self.intermediate, self.out

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        _build(self.intermediate, input_shape)
        _build(self.out, input_shape[:-1].concatenate([self.ffn]))
        super().build(input_shape)

    def call(self, hidden):
        return self.out(self.intermediate(self.input_act(hidden)))

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "ffn": self.ffn}

    def qat_unit(self) -> tuple:
        h, f = self.hidden, self.ffn
        return "ffn", 2 * h * f, f + h, h, 2

    def qat_quantize_config(self, quant: QuantConfig):
        return _block_config(quant, self.name)


class MaskedMeanPool(keras.layers.Layer):
    """Mean of the real tokens' vectors ([hidden, mask] -> (batch, H)); its output is quantized at
    8 bits when its unit (the head) is selected, so the head's input is quantized."""

    def call(self, inputs):
        hidden, mask = inputs
        weights = mask[:, :, None]
        return tf.reduce_sum(hidden * weights, axis=1) / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape[0])
        return tf.TensorShape([shape[0], shape[-1]])

    def qat_quantize_config(self, quant: QuantConfig):
        return OutputQuantizeConfig()


for _obj in (FloatQuantizeConfig, OutputQuantizeConfig, BlockQuantizeConfig, TokenEmbeddings, PaddingMask,
             Residual, Norm, SelfAttention, FeedForward, MaskedMeanPool):
    register_custom_object(_obj)


# ---- builders ------------------------------------------------------------------------------


def build_encoder(config: EncoderConfig, input_shape, num_classes: int, name: str,
                  train_words: bool = False) -> "keras.Model":
    """A randomly initialised encoder classifier for token ids of shape ``input_shape`` = (seq_len,).
    The word-embedding table is frozen unless ``train_words`` (see TokenEmbeddings)."""
    (seq,) = tuple(input_shape)
    if seq > config.max_positions:
        raise ValueError(f"sequence length {seq} exceeds {config.max_positions} positions")
    ids = keras.Input((seq,), dtype="int32", name="token_ids")
    h = TokenEmbeddings(config.vocab, config.hidden, config.max_positions, config.type_vocab, config.eps,
                        train_words, name="embeddings")(ids)
    mask = PaddingMask(name="padding_mask")(ids)
    for i in range(config.layers):
        a = SelfAttention(config.hidden, config.heads, name=f"attention_{i}")([h, mask])
        h = Norm(epsilon=config.eps, name=f"attention_{i}_norm")(Residual(name=f"attention_{i}_residual")([h, a]))
        f = FeedForward(config.hidden, config.ffn, name=f"ffn_{i}")(h)
        h = Norm(epsilon=config.eps, name=f"ffn_{i}_norm")(Residual(name=f"ffn_{i}_residual")([h, f]))
    pooled = MaskedMeanPool(name="pool")([h, mask])
    logits = keras.layers.Dense(num_classes, kernel_initializer=_init(), name="head")(pooled)
    model = keras.Model(ids, logits, name=name)
    model.pretrained_from = None
    return model


def pretrained_from(model: "keras.Model") -> Optional[str]:
    """The weights file the encoder was initialised from, or None for random initialisation."""
    return getattr(model, "pretrained_from", None)


def build_minilm(input_shape=(128,), num_classes=5) -> "keras.Model":
    """all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads, FFN 1536) with its real weights."""
    return _pretrained(MINILM, input_shape, num_classes, "minilm", minilm_files().safetensors)


def build_minilm_2layer(input_shape=(64,), num_classes=5) -> "keras.Model":
    """The first 2 layers of all-MiniLM-L6-v2, with their real weights (the smoke tier's model)."""
    config = EncoderConfig(2, MINILM.hidden, MINILM.heads, MINILM.ffn)
    return _pretrained(config, input_shape, num_classes, "minilm_2layer", minilm_files().safetensors)


def build_minilm_random(input_shape=(64,), num_classes=5, layers: int = 2) -> "keras.Model":
    """The MiniLM architecture (first ``layers`` layers) from random initialisation: the control."""
    return build_encoder(EncoderConfig(layers, MINILM.hidden, MINILM.heads, MINILM.ffn), input_shape,
                         num_classes, f"minilm_{layers}layer_random")


def build_bert_mini(input_shape=(128,), num_classes=5) -> "keras.Model":
    """BERT-mini (4 layers, hidden 256, 4 heads, FFN 1024): weights from the safetensors file named by
    $QATBENCH_BERT_MINI_WEIGHTS (Hugging Face BERT layout), else random initialisation."""
    path = os.environ.get(BERT_MINI_ENV)
    if not path:  # a random word table has to be learned; a pre-trained one stays frozen
        return build_encoder(BERT_MINI, input_shape, num_classes, "bert_mini", train_words=True)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{BERT_MINI_ENV}={path}: no such file")
    return _pretrained(BERT_MINI, input_shape, num_classes, "bert_mini", Path(path))


def _pretrained(config, input_shape, num_classes, name, path: Path) -> "keras.Model":
    model = build_encoder(config, input_shape, num_classes, name)
    load_bert_weights(model, path, config.layers)
    model.pretrained_from = str(path)
    return model
