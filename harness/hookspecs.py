"""Hooks that qatbench adds to pytest (registered by harness/pytest_plugin.py)."""

import pytest


@pytest.hookspec
def pytest_qatbench_models(config):
    """Return ModelSpecs (harness.design.registry.ModelSpec; a list, or one) to benchmark besides the
    built-in zoo. Implement it in your conftest.py; each spec's cases run like a zoo model's."""
