"""The benchmark cases: one per (model, selection, bit width, seed), generated from the registry.

Each carries the ``qatbench`` marker (``-m "not qatbench"`` or ``--qat-skip`` deselects them) and the
warning filters of TensorFlow's and tfmot's known deprecation noise, on the cases only: a project's
own tests keep their warnings."""

import pytest


@pytest.mark.qatbench
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")
def test_qat_case(qat_case, qat_session, qat_progress):
    record, violations, resumed = qat_session.run(qat_case)
    if violations:
        pytest.fail(f"{qat_case.id} [{record['status']}]: " + "; ".join(violations), pytrace=False)
    if resumed:
        pytest.skip(f"resumed: {qat_case.id} already measured in this run ({record['status']})")
    assert record["status"] == "passed"
