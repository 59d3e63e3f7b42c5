"""The regression gate on resampled real seeds (harness/analysis/gate_power.py): whole seeds' drop vectors of
results/reference (10 seeds of mlp and cnn) keep the correlations between configurations and the heavy tails
that a Gaussian simulation misses. Fixed RNG seeds; about 30 s on 2 cores."""

import json

import pytest

from harness.analysis import gate_power
from harness.results.records import read_case_records

DRAWS = 250  # per rate (Monte Carlo SE of a 5% rate: 1.4 pp); the full 1,500-draw numbers are in docs/results.md


@pytest.fixture(scope="module")
def layouts():
    if not (gate_power.REFERENCE / "cases").is_dir():
        pytest.skip("no committed reference run")
    records, _ = read_case_records(gate_power.REFERENCE)
    found = gate_power.layouts(records)
    assert {name: len(seeds) for name, (_, _, seeds, _) in found.items()} == {"smoke": 10, "full mlp+cnn grid": 10}
    return found


@pytest.mark.parametrize("name", ["smoke", "full mlp+cnn grid"])
@pytest.mark.parametrize("min_effect", [1.0, 0.5])
def test_false_failures_at_most_5_percent_on_resampled_seeds(layouts, name, min_effect):
    keys, meta, _, table = layouts[name]
    rate = gate_power.false_failures(keys, meta, table, DRAWS, min_effect, rng_seed=31)
    print(f"{name}, minimum effect {min_effect:g} pp: false failures {rate:.1%}")
    assert rate <= 0.05, rate


def test_power_per_group_for_one_configuration_2_pp_worse(layouts):
    """Printed per group; a group whose configurations are as quiet as mlp's catches 2 pp in most draws,
    and nothing is caught where nothing changed (effect 0: the same draws, no regression)."""
    keys, meta, _, table = layouts["smoke"]
    shares = gate_power.power(keys, meta, table, 40, 2.0, 1.0, rng_seed=5)
    print("power at 2 pp (smoke layout):", {g: round(p, 2) for g, p in shares.items()})
    assert set(shares) == {"cnn/w4/qat", "cnn/w8/qat", "mlp/w4/qat", "mlp/w8/qat"}
    assert shares["mlp/w8/qat"] >= 0.8, shares
    none = gate_power.power(keys, meta, table, 40, 0.0, 1.0, rng_seed=5)
    assert max(none.values()) <= 0.05, none


@pytest.mark.parametrize("name", ["smoke", pytest.param("full mlp+cnn grid", marks=pytest.mark.slow)])
def test_the_committed_rates_are_what_the_seeded_simulation_gives(layouts, name):
    """results/reference/gate-power.json (docs/results.md's gate-power table) recomputed from the records
    with its own draws: every rate equal, so the docs' numbers cannot drift from the code or the records.
    About 10 s for the smoke layout, a minute for the full grid."""
    saved = json.loads(gate_power.SAVED.read_text())
    again = gate_power.measure_layout(*layouts[name], draws=saved["draws"])
    assert again == {k: v for k, v in saved["layouts"][name].items() if k != "text"}
