"""Every unit boundary deploys as selected (issue 34): a selected unit's input is quantized whatever
layer produces it. Conversion only, no training (tests/boundary_models.py)."""

from __future__ import annotations

import gc
import os
import re
import time
from pathlib import Path

import pytest

import boundary_models as bm

pytestmark = pytest.mark.tf
DOC = Path(__file__).resolve().parents[1] / "docs" / "how-it-works.md"

# the fix each tiny pattern needs in front of c2: the producer given an output quantizer (None: none)
EXPECTED_FIX = {"bn": "p", "bn-relu": None, "add": None, "bn-pad": "p", "bn-dropout": "p", "dw-bn": "p",
                "sigmoid": "p", "sigmoid-pad": "p", "tanh-conv": "p", "se": None, "no-bias": None, "dw-no-bias": None}


@pytest.fixture(scope="module")
def tiny_models():
    from harness.case import quantize

    return {kind: (model, quantize.units_of(model)) for kind in bm.TINY for model in [bm.tiny(kind)]}


def fixes_at_c2(model, units):
    from harness.case import quantize

    _, _, chosen = bm.convert_cut(model, units, "single", unit_index(units, "c2"))
    return quantize.fixed_producers(chosen), chosen


def unit_index(units, weight_layer: str) -> int:
    return next(u.index for u in units if u.weight_layer == weight_layer)


@pytest.mark.parametrize("kind", bm.TINY)
def test_every_cut_of_each_boundary_pattern_is_exact(tiny_models, kind):
    """Each N of last, first and single: the kernels the converter quantizes are the selected ones,
    weight bytes are the formula's, and the float constants a fix adds are what the formula says."""
    from harness.case import quantize

    from harness.design import size
    from harness.design.config import QuantConfig

    model, units = tiny_models[kind]
    control = bm.float_audit(model)
    control_other = control.other_const_bytes
    assert control.weight_bytes == size.predict(units, (), QuantConfig(8)).weight_bytes, kind  # the float file
    for order in ("last", "first", "single"):
        for n in bm.cuts(order, len(units)):
            found, predicted, chosen = bm.convert_cut(model, units, order, n)
            assert bm.exact(found, predicted), (kind, order, n, found.kernel_dtypes, quantize.fixed_producers(chosen))
            assert found.other_const_bytes - control_other == predicted.boundary_const_bytes, (kind, order, n)


@pytest.mark.parametrize("kind", bm.TINY)
def test_the_fix_goes_to_the_producer_tfmot_leaves_float(tiny_models, kind):
    model, units = tiny_models[kind]
    fixes, chosen = fixes_at_c2(model, units)
    expected = EXPECTED_FIX[kind]
    assert fixes == ([expected] if expected else [])
    channels = model.get_layer("p").output.shape[-1]
    from harness.design import size

    assert size.boundary_const_bytes(chosen) == (8 * channels if kind in ("bn", "bn-pad", "bn-dropout", "dw-bn") else 0)


def test_without_the_fix_the_selected_conv_stays_float(tiny_models, monkeypatch):
    """The failure the fix removes, so that the exact test above can fail: with no boundary fix the
    conv behind an unselected linear BN is FLOAT32 in the file."""
    from harness.case import quantize

    monkeypatch.setattr(quantize, "boundary_fixes", lambda *args: ())
    model, units = tiny_models["bn"]
    found, predicted, _ = bm.convert_cut(model, units, "single", unit_index(units, "c2"))
    assert (found.quantized_kernels, predicted.quantized_kernels) == (0, 1)


def test_a_weight_layer_behind_a_fixed_range_activation_shares_a_unit_with_its_readers(tiny_models, monkeypatch):
    """The converter knows a tanh's or sigmoid's output scale without a fake-quant, so the weight layer
    reading it (c2) became INT8 whenever its own output was quantized: split from c3, last-2 (c3 and the
    head) held 3 INT8 kernels for 2 selected. Tied to c3 (harness/design/units.py) the cut is not offered."""
    from harness.case import quantize

    model, units = tiny_models["tanh-conv"]
    assert [u.weight_layers for u in units] == [("c1",), ("c2", "c3"), ("logits",)]
    assert [u.weight_layers for u in tiny_models["sigmoid"][1]] == [("c1",), ("c2", "logits")]
    monkeypatch.setattr(quantize, "_reads_fixed_range", lambda layer: False)
    split = quantize.units_of(model)
    found, predicted, _ = bm.convert_cut(model, split, "last", 2)
    assert (len(split), found.quantized_kernels, predicted.quantized_kernels) == (4, 3, 2)


def test_a_bias_free_conv_without_bn_gets_the_converters_zero_bias(tiny_models):
    """TFLite gives every CONV_2D and DEPTHWISE_CONV_2D a bias: use_bias=False without a BN still stores
    one per output channel (a SeparableConv2D two), which the formula counts (exact test above)."""
    for kind, channels in (("no-bias", {"c1": 8, "c2": 8 + 16}), ("dw-no-bias", {"c1": 3, "c2": 16})):
        units = tiny_models[kind][1]
        assert {u.weight_layer: u.bias_params for u in units if u.weight_layer != "logits"} == channels, kind


def doc_rows() -> dict:
    """{producer cell: (boundary_fixes cell, constants cell)} of the docs' cut table."""
    text = DOC.read_text()
    section = text.split("### At a cut: what the first selected layer reads", 1)[1]
    table = next(block for block in section.split("\n\n") if block.startswith("| producer"))
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines()[2:]]
    return {row[0]: (row[3], row[4]) for row in rows}


DOC_PATTERN = {  # the docs table's producer cell -> the tiny pattern that shows it
    "BatchNormalization with no activation (MBConv / inverted-residual linear bottleneck)": "bn",
    "the same BN behind a ZeroPadding2D or Dropout in the selected unit": "bn-pad",
    "DepthwiseConv2D → BatchNormalization, no activation": "dw-bn",
    "BatchNormalization → ReLU / ReLU6 / Activation (relu, relu6, swish)": "bn-relu",
    "Add (residual)": "add",
    "Activation sigmoid / tanh / softmax (also behind a ZeroPadding2D in the selected unit)": "sigmoid",
    "squeeze-excite gate: Multiply of a swish and a sigmoid, in the selected unit": "se",
}


def test_the_docs_cut_table_states_what_happens(tiny_models):
    rows = doc_rows()
    assert set(rows) == set(DOC_PATTERN) | {"the model input"}
    for cell, kind in DOC_PATTERN.items():
        fix, constants = rows[cell]
        model, units = tiny_models[kind]
        fixes, chosen = fixes_at_c2(model, units)
        assert (fix == "yes") == bool(fixes), cell
        from harness.design import size

        if constants == "none":
            assert size.boundary_const_bytes(chosen) == 0, cell
        else:
            assert re.fullmatch(r"2 × channels × 4 B", constants), constants
            assert size.boundary_const_bytes(chosen) == 8 * model.get_layer("p").output.shape[-1], cell
    model, units = tiny_models["bn"]
    found, predicted, chosen = bm.convert_cut(model, units, "first", 1)  # the input feeds c1
    from harness.case import quantize

    assert rows["the model input"][0] == "no" and quantize.fixed_producers(chosen) == [] and bm.exact(found, predicted)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("QATBENCH_SWEEPS") != "1", reason="the full mobile sweep converts every cut "
                    "(EfficientNetB0: 246 cuts, about an hour on 2 cores); QATBENCH_SWEEPS=1 runs it")
@pytest.mark.parametrize("order", ["last", "first", "single"])
@pytest.mark.parametrize("name", sorted(bm.MOBILE))
def test_every_cut_of_the_mobile_families(name, order):
    """Every cut audited: the quantized kernels are the selected ones and the predicted weight bytes are
    the file's (a fused swish, EfficientNet's *_se_reduce, included: harness/case/quantize.py). The
    constants a boundary fix adds are checked exactly on the tiny patterns above; here the remaining
    difference of other constants is printed (EfficientNet's input Rescaling/Normalization constants,
    27-28 B, fold away in QAT files)."""
    from harness.case import quantize

    model = bm.mobile(name)
    units = quantize.units_of(model)
    control_other = bm.float_audit(model).other_const_bytes
    start, wrong, offsets = time.perf_counter(), [], set()
    # QATBENCH_SWEEP_FROM=N: only the cuts from N on (a sweep stopped part-way continues where it was)
    first_cut = int(os.environ.get("QATBENCH_SWEEP_FROM", "0"))
    chosen_cuts = [n for n in bm.cuts(order, len(units)) if n >= first_cut]
    for n in chosen_cuts:
        found, predicted, chosen = bm.convert_cut(model, units, order, n)
        exact = bm.exact(found, predicted)
        if not exact:
            wrong.append((n, found.quantized_kernels, predicted.quantized_kernels, found.weight_bytes,
                          predicted.weight_bytes, quantize.fixed_producers(chosen)))
        # one line per cut under -s: a sweep stopped early still says how far it got
        print(f"{name} {order}{n}: {'exact' if exact else f'NOT exact {wrong[-1]}'} "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        offsets.add(found.other_const_bytes - control_other - predicted.boundary_const_bytes)
        del found, predicted, chosen
        gc.collect()  # each cut's clone and converter state: an EfficientNet sweep grew past 9 GB without it
    count = len(chosen_cuts)
    print(f"{name} {order}: {len(units)} units, {count} cuts, {count - len(wrong)} exact, "
          f"{time.perf_counter() - start:.0f} s, other constants vs prediction {sorted(offsets)} B", flush=True)
    assert not wrong, wrong


def test_a_fused_swish_conv_is_integer_when_selected():
    """EfficientNet's squeeze-excite pattern in small: a Conv2D with a fused swish. Without quantizing
    its output before the swish, the converter kept it FLOAT32 (harness/case/quantize.py)."""
    from harness.backend import keras
    from harness.case import quantize

    layers = keras.layers
    inp = layers.Input(bm.SHAPE)
    x = layers.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = layers.Conv2D(4, 1, activation="swish", name="se_reduce")(x)
    x = layers.Conv2D(8, 1, activation="sigmoid", name="se_expand")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    model = bm.like_trained(keras.Model(inp, layers.Dense(bm.CLASSES, name="logits")(x)))
    units = quantize.units_of(model)
    for order in ("last", "first", "single"):
        for n in bm.cuts(order, len(units)):
            found, predicted, _ = bm.convert_cut(model, units, order, n)
            assert bm.exact(found, predicted), (order, n, found.quantized_kernels, predicted.quantized_kernels)


def test_mobilenet_v3_hard_swish_becomes_layers_tfmot_can_annotate(tmp_path):
    """MobileNetV3's hard-swish and hard-sigmoid TFOpLambda chains (tfmot could not wrap them: a strict
    run refused the TFOpLambda, --qat-skip-unsupported crashed quantize_apply) become one layer each
    (harness/models/hard_swish.py): the float outputs are the same bit for bit, no TFOpLambda is left,
    cuts through them audit exact, and a model file gets the rewrite when it is loaded."""
    from collections import Counter

    import numpy as np
    from harness.backend import keras
    from harness.case import quantize
    from harness.external import model_file

    model = bm.like_trained(bm.mobilenet_v3(keras))
    rewritten = bm.hard_swish_rewritten(model)
    classes = Counter(type(layer).__name__ for layer in rewritten.layers)
    assert (classes["TFOpLambda"], classes["HardSwish"], classes["HardSigmoid"]) == (0, 19, 9)
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    assert np.array_equal(model.predict(x, verbose=0), rewritten.predict(x, verbose=0))
    units = quantize.units_of(rewritten)
    for order, n in (("last", 3), ("first", 4), ("single", 5)):  # HardSwish in the unit, the input, a BN producer
        found, predicted, _ = bm.convert_cut(rewritten, units, order, n)
        assert bm.exact(found, predicted), (order, n, found.quantized_kernels, predicted.quantized_kernels)
    model.save(tmp_path / "v3.keras")
    loaded = model_file.build(tmp_path / "v3.keras", "")
    logits = keras.Model(model.inputs, model.layers[-1].input)  # the loader removes the final softmax
    assert "TFOpLambda" not in {type(layer).__name__ for layer in loaded.layers}
    assert np.array_equal(logits.predict(x, verbose=0), loaded.predict(x, verbose=0))


def test_a_tf_op_that_needs_an_output_quantizer_is_a_one_line_error():
    """A raw TensorFlow op (TFOpLambda) in a selected unit: strict, the unsupported-layer error names it;
    kept float (--qat-skip-unsupported), tfmot's wrapper could not take it ("'list' object has no
    attribute 'dtype'" from quantize_apply), and the error now says so in one line."""
    from harness.backend import keras
    from harness.case import quantize
    from harness.design.config import QuantConfig, Selection
    from harness.design.select import select
    from harness.models.quantizable import UnsupportedQuantization

    layers = keras.layers
    inp = layers.Input(bm.SHAPE)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp) * 2.0
    x = layers.GlobalAveragePooling2D(name="gap")(layers.Conv2D(8, 3, activation="relu", name="c2")(x))
    model = bm.like_trained(keras.Model(inp, layers.Dense(bm.CLASSES, name="logits")(x)))
    units = quantize.units_of(model)
    chosen = select(units, Selection("single", 1))
    with pytest.raises(UnsupportedQuantization, match=r"TFOpLambda\) in a selected unit is not supported"):
        quantize.without_unsupported(model, chosen, QuantConfig(8), False)
    kept, _ = quantize.without_unsupported(model, chosen, QuantConfig(8), True)
    with pytest.raises(UnsupportedQuantization, match=r"\(TFOpLambda, math.multiply\) needs an output quantizer"):
        quantize.annotate(model, kept, QuantConfig(8))
    found, predicted, _ = bm.convert_cut(model, units, "single", 0)  # c1 alone: the op stays float, unwrapped
    assert bm.exact(found, predicted)
