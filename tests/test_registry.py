import pytest

from harness.design import registry
from harness.design.config import Case, QuantConfig, Selection


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="unknown model 'vgg'; choose from: mlp"):
        registry.get("vgg")


def test_every_tier_has_a_grid():
    for spec in registry.REGISTRY.values():
        for name, tier in spec.tiers.items():
            assert tier.n_values and tier.bits and tier.orders and tier.seeds, (spec.name, name)
            assert max(tier.n_values) <= spec.num_units


def test_config_hash_changes_with_anything_that_changes_the_numbers():
    spec = registry.get("mlp")
    case = Case("mlp", Selection("last", 2), QuantConfig(8))
    same = Case("mlp", Selection("last", 2), QuantConfig(8))
    assert case.config_hash(spec.fingerprint("smoke")) == same.config_hash(spec.fingerprint("smoke"))
    variants = [Case("mlp", Selection("last", 3), QuantConfig(8)), Case("mlp", Selection("last", 2), QuantConfig(4)),
                Case("mlp", Selection("last", 2), QuantConfig(8), seed=1)]
    hashes = {v.config_hash(spec.fingerprint("smoke")) for v in variants}
    assert len(hashes) == 3 and case.config_hash(spec.fingerprint("smoke")) not in hashes
    assert case.config_hash(spec.fingerprint("smoke")) != case.config_hash(spec.fingerprint("full"))


@pytest.mark.tf
@pytest.mark.parametrize("name", sorted(registry.REGISTRY))
def test_declared_units_match_the_built_model(name):
    from harness.case import quantize

    spec = registry.get(name)
    model = spec.builder.load()(spec.input_shape, 10)
    units = quantize.units_of(model)
    assert len(units) == spec.num_units
    assert tuple(sorted({u.kind for u in units})) == tuple(sorted(spec.unit_kinds))
