"""Model builders: the units they expose and the weights files they accept."""

import numpy as np
import pytest

pytestmark = pytest.mark.tf


def test_resnet20_units_are_19_convs_and_1_dense_with_bn_kept_together():
    from harness.case import quantize
    from harness.models import zoo

    units = quantize.units_of(zoo.build_resnet20())
    assert [u.kind for u in units].count("conv") == 19 and units[-1].kind == "dense"
    for unit in units[:-1]:
        conv = unit.weight_layer
        assert conv.replace("_conv", "_bn") in unit.members, unit


def test_resnet50_weights_file_with_wrong_shapes_names_the_tensor(tmp_path, monkeypatch):
    from harness.models import zoo
    from harness.backend import keras

    other = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=7)
    path = tmp_path / "r50.h5"
    other.save_weights(str(path))
    monkeypatch.setenv(zoo.RESNET50_WEIGHTS_ENV, str(path))
    with pytest.raises(ValueError, match=r"predictions/kernel.*\(2048, 10\).*\(2048, 7\)"):
        zoo.build_resnet50((32, 32, 3), 10)


def test_resnet50_loads_a_matching_weights_file(tmp_path, monkeypatch):
    from harness.models import zoo

    source = zoo.build_resnet50()
    path = tmp_path / "r50.h5"
    source.save_weights(str(path))
    monkeypatch.setenv(zoo.RESNET50_WEIGHTS_ENV, str(path))
    loaded = zoo.build_resnet50()
    assert np.array_equal(loaded.get_layer("conv1_conv").get_weights()[0], source.get_layer("conv1_conv").get_weights()[0])


@pytest.mark.slow
@pytest.mark.parametrize("order", ["last", "first"])
def test_every_resnet20_cut_quantizes_exactly_the_selected_kernels(order):
    """No cut between two units lets the converter quantize an unselected kernel: at each N the
    flatbuffer holds as many quantized kernels as were selected (a residual block's strided shortcut
    once pulled the block's first conv into INT8 at last6 and last12)."""
    from harness.case import audit, export, quantize
    from harness.models import zoo
    from harness.design.config import QuantConfig, Selection
    from harness.design.select import select

    model = zoo.build_resnet20()
    units = quantize.units_of(model)
    quant = QuantConfig(weight_bits=8)
    wrong = {}
    for n in (1, 6, 7, 8, 12, 13, 14):  # both sides of the two units that hold a strided shortcut
        chosen = select(units, Selection(order, n))
        found = audit.inspect(export.to_tflite(quantize.annotate(model, chosen, quant), quantized=True, quant=quant))
        counted = sum(1 for k in found.kernels if k.quantized)
        if counted != sum(u.kernels for u in chosen):
            wrong[n] = (counted, sum(u.kernels for u in chosen))
    assert wrong == {}
