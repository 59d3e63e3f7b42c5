"""The benchmark cases: one per (model, selection, bit width, seed), generated from the registry."""

from harness import plugin


def test_qat_case(qat_case, qat_session):
    record, violations = qat_session.run(qat_case)
    if violations:
        plugin.fail(f"{qat_case.id} [{record['status']}]: " + "; ".join(violations))
    assert record["status"] == "passed"
