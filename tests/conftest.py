"""Test helpers shared by the unit tests. (The suite's hooks live in the repository's conftest.py.)"""

import pytest
from factories import make_record


@pytest.fixture(name="make_record")
def make_record_fixture():
    """The one record factory (tests/factories.py): a schema-valid record, fields overriding."""
    return make_record
