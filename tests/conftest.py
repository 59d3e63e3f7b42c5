"""Test helpers shared by the unit tests. (The suite's hooks live in the repository's conftest.py.)"""

import os

import pytest
from factories import make_record


@pytest.fixture(autouse=True)
def _no_latency_timing_in_unit_tests(monkeypatch):
    """Unit tests do not time inference (harness/case/latency.py; tests/test_latency.py turns it on where it
    is the subject): it costs each case about half a second. Per test, not for the process: the README's
    test command runs the smoke tier in the same process after tests/, and its cases must time (the
    latency gate compares them with the baseline's). A value the user set is kept."""
    if "QATBENCH_LATENCY" not in os.environ:
        monkeypatch.setenv("QATBENCH_LATENCY", "off")


@pytest.fixture(name="make_record")
def make_record_fixture():
    """The one record factory (tests/factories.py): a schema-valid record, fields overriding."""
    return make_record
