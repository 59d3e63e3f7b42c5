"""The benchmark cases: one per (model, selection, bit width, seed), generated from the registry."""

import pytest

from harness import session as session_module


def test_qat_case(qat_case, qat_session):
    record, violations, resumed = qat_session.run(qat_case)
    if violations:
        session_module.fail(f"{qat_case.id} [{record['status']}]: " + "; ".join(violations))
    if resumed:
        pytest.skip(f"resumed: {qat_case.id} already measured in this run ({record['status']})")
    assert record["status"] == "passed"
