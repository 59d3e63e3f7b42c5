import pytest
from hypothesis import given, strategies as st

from harness.design.config import QuantConfig, Selection
from harness.design.select import select
from harness.design.units import LayerInfo, Unit, group_units

KINDS = ("dense", "conv", "attention", "ffn")


@st.composite
def unit_lists(draw, min_size=1, max_size=30):
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=min_size, max_size=max_size))
    return tuple(Unit(i, k, f"w{i}", (f"w{i}",), draw(st.integers(1, 10_000)), draw(st.integers(0, 100)))
                 for i, k in enumerate(kinds))


@given(unit_lists(), st.data())
def test_last_and_first_partition_the_units(units, data):
    n = data.draw(st.integers(0, len(units)))
    last = select(units, Selection("last", n))
    first = select(units, Selection("first", len(units) - n))
    assert len(last) == n
    assert {u.index for u in last}.isdisjoint({u.index for u in first})
    assert sorted(u.index for u in last + first) == list(range(len(units)))
    assert all(u.index >= len(units) - n for u in last)


@given(unit_lists(), st.data())
def test_single_picks_exactly_that_unit(units, data):
    k = data.draw(st.integers(0, len(units) - 1))
    assert select(units, Selection("single", k)) == (units[k],)


@given(unit_lists())
def test_type_selects_every_unit_of_the_kind_and_nothing_else(units):
    for kind in {u.kind for u in units}:
        chosen = select(units, Selection("type", kind=kind))
        assert chosen and all(u.kind == kind for u in chosen)
        assert len(chosen) == sum(u.kind == kind for u in units)


@given(unit_lists(), st.integers(1, 50))
def test_n_beyond_the_model_is_a_clear_error(units, extra):
    with pytest.raises(ValueError, match=rf"N must be in 0\.\.{len(units)}"):
        select(units, Selection("last", len(units) + extra))


def test_bad_selection_arguments_name_the_allowed_values():
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        Selection("last", -1)
    with pytest.raises(ValueError, match="order must be one of last, first, single, type, sensitivity"):
        Selection("middle", 1)
    with pytest.raises(ValueError, match="needs a unit kind"):
        Selection("type")
    units = (Unit(0, "dense", "a", ("a",), 10, 1),)
    with pytest.raises(ValueError, match="this model has: dense"):
        select(units, Selection("type", kind="attention"))
    with pytest.raises(ValueError, match=r"single unit index must be in 0\.\.0"):
        select(units, Selection("single", 1))


@pytest.mark.parametrize("bits", [0, 1, 9, "x", 4.0, True])
def test_bits_outside_2_to_8_are_rejected(bits):
    with pytest.raises(ValueError, match=r"2\.\.8"):
        QuantConfig(bits)


def test_deployment_capability_table():
    table = {b: QuantConfig(b).deployment for b in range(2, 9)}
    assert table == {2: "simulated", 3: "simulated", 4: "int4", 5: "int8-storage", 6: "int8-storage",
                     7: "int8-storage", 8: "int8"}
    assert [QuantConfig(b).storage_bits for b in range(2, 9)] == [4, 4, 4, 8, 8, 8, 8]


MLP_LAYERS = (
    LayerInfo("image", "InputLayer"),
    LayerInfo("flatten", "Flatten"),
    LayerInfo("dense_1", "Dense", "dense", 784 * 128, 128),
    LayerInfo("dense_2", "Dense", "dense", 128 * 256, 256),
    LayerInfo("dropout", "Dropout"),
    LayerInfo("dense_3", "Dense", "dense", 256 * 128, 128),
    LayerInfo("dense_4", "Dense", "dense", 128 * 128, 128),
    LayerInfo("logits", "Dense", "dense", 128 * 10, 10),
)


def test_a_dropout_joins_the_dense_behind_it():
    units = group_units(MLP_LAYERS)
    assert [u.members for u in units] == [("flatten", "dense_1"), ("dense_2",), ("dropout", "dense_3"),
                                          ("dense_4",), ("logits",)]
    chosen = select(units, Selection("last", 3))
    assert "dropout" in {name for u in chosen for name in u.members}


def test_batchnorm_and_activation_stay_with_their_conv():
    layers = (
        LayerInfo("conv_1", "Conv2D", "conv", 27 * 16, 16, 16),
        LayerInfo("bn_1", "BatchNormalization"),
        LayerInfo("relu_1", "ReLU"),
        LayerInfo("pool", "MaxPooling2D"),
        LayerInfo("conv_2", "Conv2D", "conv", 144 * 32, 32, 32),
        LayerInfo("bn_2", "BatchNormalization"),
        LayerInfo("act_2", "Activation"),
        LayerInfo("gap", "GlobalAveragePooling2D"),
        LayerInfo("head", "Dense", "dense", 320, 10),
        LayerInfo("softmax", "Softmax"),
    )
    units = group_units(layers)
    assert [u.members for u in units] == [("conv_1", "bn_1", "relu_1"), ("pool", "conv_2", "bn_2", "act_2"),
                                          ("gap", "head", "softmax")]


def test_a_model_without_weight_layers_is_an_error():
    with pytest.raises(ValueError, match="no quantizable weight layer"):
        group_units((LayerInfo("image", "InputLayer"), LayerInfo("flatten", "Flatten")))


def test_graph_edges_keep_a_bn_with_its_conv_across_an_interleaved_shortcut():
    """Keras lists a residual block's shortcut layers between a conv and its BN; edges decide."""
    layers = (
        LayerInfo("a_conv", "Conv2D", "conv", 9, 1, 1, inputs=("image",)),
        LayerInfo("a_bn", "BatchNormalization", inputs=("a_conv",)),
        LayerInfo("a_relu", "ReLU", inputs=("a_bn",)),
        LayerInfo("b_conv", "Conv2D", "conv", 9, 1, 1, inputs=("a_relu",)),
        LayerInfo("down", "MaxPooling2D", inputs=("image",)),
        LayerInfo("pad", "ChannelPad", inputs=("down",)),
        LayerInfo("b_bn", "BatchNormalization", inputs=("b_conv",)),
        LayerInfo("add", "Add", inputs=("pad", "b_bn")),
        LayerInfo("out", "ReLU", inputs=("add",)),
        LayerInfo("head", "Dense", "dense", 10, 10, inputs=("out",)),
    )
    units = group_units(layers)
    assert [u.members for u in units] == [("a_conv", "a_bn", "a_relu", "down"), ("b_conv", "b_bn"),
                                          ("pad", "add", "out", "head")]


def test_a_shortcut_that_reads_a_conv_input_joins_that_conv():
    """The strided shortcut of a ResNet block reads the block input, as the block's first conv does:
    quantizing it fake-quantizes that tensor, which makes the converter quantize the conv too, so the
    two are one unit (else resnet20-last6 held 7 quantized kernels for 6 selected)."""
    layers = (
        LayerInfo("prev_conv", "Conv2D", "conv", 9, 1, 1, inputs=("image",)),
        LayerInfo("block_in", "ReLU", inputs=("prev_conv",)),
        LayerInfo("a_conv", "Conv2D", "conv", 9, 1, 1, inputs=("block_in",)),
        LayerInfo("a_relu", "ReLU", inputs=("a_conv",)),
        LayerInfo("down", "AveragePooling2D", inputs=("block_in",)),
        LayerInfo("b_conv", "Conv2D", "conv", 9, 1, 1, inputs=("a_relu",)),
        LayerInfo("add", "Add", inputs=("down", "b_conv")),
        LayerInfo("head", "Dense", "dense", 10, 10, inputs=("add",)),
    )
    units = group_units(layers)
    assert [u.members for u in units] == [("prev_conv", "block_in"), ("a_conv", "a_relu", "down"), ("b_conv",),
                                          ("add", "head")]
    assert all("down" not in u.members for u in select(units, Selection("last", 2)))


# --- the sensitivity order (issue 17): select() stays pure, the costs come from the caller ---

@given(unit_lists(), st.data())
def test_sensitivity_order_is_the_greedy_selection_given_costs(units, data):
    from harness.design.mixed import sensitivity_selection
    n = data.draw(st.integers(0, len(units)))
    costs = data.draw(st.lists(st.floats(0, 100), min_size=len(units), max_size=len(units)))
    bits = data.draw(st.sampled_from([8, 4]))
    chosen = select(units, Selection("sensitivity", n), costs, bits)
    assert chosen == sensitivity_selection(units, costs, n, bits, chain=True)
    assert len(chosen) == n and list(chosen) == sorted(chosen, key=lambda u: u.index)


def test_sensitivity_order_prefers_big_cheap_units_over_the_last_ones():
    # unit 0 is large and nearly free to quantize, the last unit tiny and costly: last-1 and sens-1 differ
    units = (Unit(0, "dense", "a", ("a",), 10_000, 100), Unit(1, "dense", "b", ("b",), 1_000, 10),
             Unit(2, "dense", "c", ("c",), 100, 10))
    assert select(units, Selection("sensitivity", 1), [0.01, 1.0, 5.0], 8) == (units[0],)
    assert select(units, Selection("last", 1)) == (units[2],)
    assert select(units, Selection("sensitivity", 2), [0.01, 1.0, 5.0], 8) == units[:2]


def test_sensitivity_order_without_costs_is_a_clear_error():
    units = (Unit(0, "dense", "a", ("a",), 10, 1), Unit(1, "dense", "b", ("b",), 10, 1))
    with pytest.raises(ValueError, match="order 'sensitivity' needs a predicted cost per unit"):
        select(units, Selection("sensitivity", 1))
    with pytest.raises(ValueError, match="needs a predicted cost per unit and the bit width"):
        select(units, Selection("sensitivity", 1), [1.0, 2.0])  # costs, but for which bit width?
    with pytest.raises(ValueError, match="2 costs for 2 units|1 costs for 2 units"):
        select(units, Selection("sensitivity", 1), [1.0], 8)
    with pytest.raises(ValueError, match=r"N must be in 0\.\.2"):
        select(units, Selection("sensitivity", 3), [1.0, 2.0], 8)


def test_sensitivity_case_ids_and_grid():
    from harness.design import registry
    from harness.design.config import Case, RunOptions
    from harness.design.grid import cases_for
    assert Case("mlp", Selection("sensitivity", 3), QuantConfig(8)).id == "mlp-sens3-w8a8"
    cases = [c for c in cases_for(RunOptions(tier="smoke", orders=("sensitivity",), bits=(8,), seeds=(0,)))
             if c.model == "mlp"]
    tier = registry.REGISTRY["mlp"].tier("smoke")
    assert [c.selection.n for c in cases] == [n for n in tier.n_values if n <= registry.REGISTRY["mlp"].num_units]
    assert all(c.selection.order == "sensitivity" for c in cases)
    # ignoring costs: every other order is unchanged when costs are passed
    units = (Unit(0, "dense", "a", ("a",), 10, 1), Unit(1, "dense", "b", ("b",), 10, 1))
    assert select(units, Selection("last", 1), [5.0, 0.0], 8) == (units[1],)
