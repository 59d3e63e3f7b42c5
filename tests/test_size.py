import math

import pytest
from hypothesis import given, strategies as st

from harness.design.config import QuantConfig, Selection
from harness.design.select import select
from harness.design.size import packed_bytes, predict
from harness.design.units import Unit


@given(st.integers(0, 10**7), st.integers(1, 32))
def test_packed_size_is_ceil_of_bits(count, bits):
    assert packed_bytes(count, bits) == math.ceil(count * bits / 8)


def test_packed_bytes_rejects_bad_arguments():
    with pytest.raises(ValueError, match="count must be >= 0"):
        packed_bytes(-1, 8)
    with pytest.raises(ValueError, match=r"bits must be in 1\.\.32"):
        packed_bytes(10, 0)


units_strategy = st.lists(
    st.tuples(st.integers(1, 100_000), st.integers(0, 512)), min_size=1, max_size=20
).map(lambda specs: tuple(Unit(i, "dense", f"w{i}", (f"w{i}",), k, b) for i, (k, b) in enumerate(specs)))


@given(units_strategy, st.sampled_from([2, 3, 4, 5, 6, 7, 8]))
def test_predicted_size_decreases_with_n(units, bits):
    sizes = [predict(units, select(units, Selection("last", n)), QuantConfig(bits)).weight_bytes
             for n in range(len(units) + 1)]
    assert all(b < a for a, b in zip(sizes, sizes[1:]))
    assert sizes[0] == sum((u.kernel_params + u.bias_params) * 4 for u in units)


@given(units_strategy, st.data())
def test_predicted_size_grows_with_bits(units, data):
    n = data.draw(st.integers(1, len(units)))
    chosen = select(units, Selection("last", n))
    ideal = [predict(units, chosen, QuantConfig(b)).ideal_bytes for b in range(2, 9)]
    stored = [predict(units, chosen, QuantConfig(b)).weight_bytes for b in range(2, 9)]
    assert all(a <= b for a, b in zip(ideal, ideal[1:]))
    assert all(a <= b for a, b in zip(stored, stored[1:]))


def test_known_mlp_sizes():
    units = (Unit(0, "dense", "a", ("a",), 1000, 10), Unit(1, "dense", "b", ("b",), 101, 1))
    whole4 = predict(units, units, QuantConfig(4))
    assert whole4.weight_bytes == 500 + 40 + 51 + 4  # odd kernel rounds up a nibble
    assert whole4.float_bytes == (1010 + 102) * 4
    assert predict(units, units, QuantConfig(3)).ideal_bytes == 375 + 40 + 38 + 4
    assert predict(units, units[1:], QuantConfig(8)).weight_bytes == 1010 * 4 + 101 + 4
