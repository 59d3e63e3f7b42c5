"""Model builders: the units they expose and the weights files they accept."""

import numpy as np
import pytest

pytestmark = pytest.mark.tf


def test_resnet20_units_are_19_convs_and_1_dense_with_bn_kept_together():
    from harness import quantize, zoo

    units = quantize.units_of(zoo.build_resnet20())
    assert [u.kind for u in units].count("conv") == 19 and units[-1].kind == "dense"
    for unit in units[:-1]:
        conv = unit.weight_layer
        assert conv.replace("_conv", "_bn") in unit.members, unit


def test_resnet50_weights_file_with_wrong_shapes_names_the_tensor(tmp_path, monkeypatch):
    from harness import zoo
    from harness.backend import keras

    other = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=7)
    path = tmp_path / "r50.h5"
    other.save_weights(str(path))
    monkeypatch.setenv(zoo.RESNET50_WEIGHTS_ENV, str(path))
    with pytest.raises(ValueError, match=r"predictions/kernel.*\(2048, 10\).*\(2048, 7\)"):
        zoo.build_resnet50((32, 32, 3), 10)


def test_resnet50_loads_a_matching_weights_file(tmp_path, monkeypatch):
    from harness import zoo

    source = zoo.build_resnet50()
    path = tmp_path / "r50.h5"
    source.save_weights(str(path))
    monkeypatch.setenv(zoo.RESNET50_WEIGHTS_ENV, str(path))
    loaded = zoo.build_resnet50()
    assert np.array_equal(loaded.get_layer("conv1_conv").get_weights()[0], source.get_layer("conv1_conv").get_weights()[0])
