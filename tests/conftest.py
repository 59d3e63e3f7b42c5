"""Test helpers shared by the unit tests. (The suite's hooks live in the repository's conftest.py.)"""

import os

import pytest
from factories import make_record

# Unit tests do not time inference (harness/case/latency.py; tests/test_latency.py turns it on where it
# is the subject): it costs each case about half a second. `pytest benchmarks` keeps the default, on.
os.environ.setdefault("QATBENCH_LATENCY", "off")


@pytest.fixture(name="make_record")
def make_record_fixture():
    """The one record factory (tests/factories.py): a schema-valid record, fields overriding."""
    return make_record
