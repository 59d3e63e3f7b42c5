"""Pure parts of 'your model, your data': unit grouping around a Concatenate, outside registration,
the model-file spec's tiers and thresholds, the options, and the TFLite-vs-Keras boundary."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
from hypothesis import given, strategies as st

from harness import options
from harness.results import gates
from harness.design import registry
from harness.external import tiers
from harness.design.config import RunOptions
from harness.design.units import LayerInfo, group_units
from tests.factories import make_record


def concat_model(after: tuple) -> list:
    """conv -> add -> pw; Concatenate(add, pw); then ``after`` one-input layers; then fc."""
    layers = [LayerInfo("conv", "Conv2D", "conv", 27, 8, 8, ("in",)),
              LayerInfo("add", "Add", inputs=("conv", "conv")),
              LayerInfo("pw", "Conv2D", "conv", 64, 8, 8, ("add",)),
              LayerInfo("cat", "Concatenate", inputs=("add", "pw"))]
    previous = "cat"
    for name, cls in after:
        layers.append(LayerInfo(name, cls, inputs=(previous,)))
        previous = name
    return layers + [LayerInfo("fc", "Dense", "dense", 160, 10, 10, (previous,))]


def test_concatenate_ties_its_scale_chain_to_its_inputs_unit():
    units = group_units(concat_model((("gap", "GlobalAveragePooling2D"), ("reshape", "Reshape"), ("flat", "Flatten"))))
    assert [u.members for u in units] == [("conv",), ("add", "pw", "cat", "gap"), ("reshape", "flat", "fc")]
    # scale-preserving layers stay in the chain until the first one that re-quantizes
    units = group_units(concat_model((("pool", "MaxPooling2D"), ("flat", "Flatten"), ("mean", "AveragePooling2D"),
                                      ("drop", "Dropout"))))
    assert units[1].members == ("add", "pw", "cat", "pool", "flat", "mean")
    assert units[2].members == ("drop", "fc")


def test_concatenate_of_two_units_stays_a_pass_through():
    layers = [LayerInfo("a", "Dense", "dense", 4, 2, 2, ("in",)), LayerInfo("b", "Dense", "dense", 4, 2, 2, ("in",)),
              LayerInfo("cat", "Concatenate", inputs=("a", "b")), LayerInfo("fc", "Dense", "dense", 8, 2, 2, ("cat",))]
    assert [u.members for u in group_units(layers)] == [("a",), ("b",), ("cat", "fc")]


def spec(name: str = "tiny", **changes) -> registry.ModelSpec:
    return dataclasses.replace(registry.MLP, name=name, **changes)


def test_register_refuses_a_taken_name_and_bad_values():
    registry.register(spec("outside_a"), "test source")
    registry.register(spec("outside_a"), "test source")  # the same source again: every xdist worker does
    with pytest.raises(ValueError, match="'mlp' is taken"):
        registry.register(spec("mlp"), "test source")
    with pytest.raises(ValueError, match="must be 1..40 lowercase"):
        registry.register(spec("Bad-Name"), "test source")
    with pytest.raises(ValueError, match="not a harness.design.registry.ModelSpec"):
        registry.register("mlp", "test source")
    del registry.REGISTRY["outside_a"]


def test_ref_to_binds_arguments_and_keys_them():
    ref = registry.Ref.to(tiers.spec_name, "ignored")
    assert ref.target == "harness.external.tiers:spec_name" and ref.args == ("ignored",)
    assert registry.Ref("harness.external.tiers:spec_name", ("a/My Model.keras",)).load()() == "my_model"
    assert registry.Ref("x:y").key == "x:y"  # the zoo's fingerprints are what they were
    assert registry.Ref("x:y", ("p",)).key == ["x:y", ["p"]]


@given(st.integers(1, 80))
def test_model_file_tiers_cover_zero_one_and_every_unit(units):
    for tier in ("smoke", "full"):
        grid = tiers.n_grid(units, tier)
        assert grid[0] == 0 and grid[-1] == units and 1 in grid and list(grid) == sorted(set(grid))
        assert all(0 <= n <= units for n in grid)
    assert tiers.n_grid(units, "full") == tuple(range(units + 1)) if units <= tiers.FULL_N_LIMIT else True


def test_model_file_thresholds():
    limits = tiers.thresholds(None, 10, 0.1, 1000)
    assert limits.min_whole_compression == () and limits.min_control_accuracy == pytest.approx(0.325)
    assert limits.tflite_vs_keras_pp == 0.5 and limits.drop_bound(8) == 1.5
    small = tiers.thresholds(2.5, 2, 0.6, 50)
    assert small.drop_bound(4) == 2.5 and small.drop_bound(6) == 2.5 and small.tflite_vs_keras_pp == 4.0
    assert small.min_control_accuracy == pytest.approx(0.7)


def test_model_file_options_are_checked_together():
    with pytest.raises(argparse.ArgumentTypeError, match="go together"):
        options.check_options(RunOptions(model_file="m.keras"))
    with pytest.raises(argparse.ArgumentTypeError, match="--qat-max-drop needs --qat-model-file"):
        options.check_options(RunOptions(max_drop=1.0))
    with pytest.raises(argparse.ArgumentTypeError, match="module:name"):
        options.parse_object_ref("mylayers")
    with pytest.raises(argparse.ArgumentTypeError, match="model names"):
        options.parse_model_names("mlp,CNN")
    assert options.parse_model_names("mlp, cnn,mlp") == ("mlp", "cnn")
    with pytest.raises(argparse.ArgumentTypeError, match="does not exist"):
        options.parse_model_file("/nonexistent/model.keras")


def test_tflite_keras_gap_at_exactly_the_tolerance_passes():
    record = make_record(quant_accuracy=0.795, quant_accuracy_keras=0.8, deployment="int4", weight_bits=4)
    limits = registry.RESNET20.thresholds
    assert not [v for v in gates.violations(record, limits) if v.startswith("TFLite accuracy")]
    worse = dict(record, quant_accuracy=0.794)
    assert [v for v in gates.violations(worse, limits) if v.startswith("TFLite accuracy")]
