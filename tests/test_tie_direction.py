"""Where the changed predictions went (harness/analysis/tie_direction.py): known counts, the direction test
on simulated moves, and the report and docs on a run folder written with the real record writer."""

import json

import numpy as np

from harness.analysis import docs_numbers, tie_direction
from harness.results import records
from tests.factories import make_record

CLASSES = 10


def simulated(rng, n=4000, tied=300, untied=200, untied_lower_share=0.5):
    """Control labels; the quantized model ties on ``tied`` examples (argmax takes the lowest tied class, so
    each of those predictions moves down or stays) and changes ``untied`` others, a share of them downward."""
    control = rng.integers(1, CLASSES - 1, size=n)
    quant = control.copy()
    top_size = np.ones(n, dtype=int)
    idx = rng.permutation(n)
    tie_idx, move_idx = idx[:tied], idx[tied:tied + untied]
    for i in tie_idx:  # the tie holds the control's class and one other; argmax deploys the lower of them
        other = rng.integers(0, CLASSES)
        while other == control[i]:
            other = rng.integers(0, CLASSES)
        quant[i] = min(control[i], other)
        top_size[i] = 2
    lower = rng.random(untied) < untied_lower_share
    quant[move_idx] = np.where(lower, control[move_idx] - 1, control[move_idx] + 1)
    return {"y_true": control, "control": control, "quant": quant, "control_top_size": np.ones(n, dtype=int),
            "quant_top_size": top_size, "control_top_hit": np.ones(n, dtype=int),
            "quant_top_hit": np.ones(n, dtype=int)}


def record(case_id, seed, drop=0.1, deployed=0.2):
    return {"case_id": case_id, "seed": seed, "status": "passed", "accuracy_drop_pp": drop,
            "deployed_drop_pp": deployed, "predictions_file": f"{case_id}.predictions.npz"}


def test_counts_are_exact_and_ties_move_only_down_under_argmax():
    rng = np.random.default_rng(3)
    arrays = simulated(rng)
    (m,) = tie_direction.moves([record("cnn-last1-w8a8-ptq", 0)], lambda r: arrays)
    changed = arrays["control"] != arrays["quant"]
    assert m.quant_ties == 300 and m.control_ties == 0 and m.examples == 4000
    assert m.tied_higher == 0 and m.tied_lower == int(np.sum(changed & (arrays["quant_top_size"] > 1)))
    assert m.untied_lower + m.untied_higher == 200


def test_untied_moves_without_a_preference_are_not_flagged_and_a_real_skew_is():
    rng = np.random.default_rng(5)
    fair = [tie_direction.moves([record("g", 0)], lambda r: simulated(rng))[0].untied_p for _ in range(200)]
    assert 0.01 <= np.mean(np.array(fair) < 0.05) <= 0.10  # about 5% false flags at alpha 0.05
    skewed = tie_direction.moves([record("g", 0)], lambda r: simulated(rng, untied_lower_share=0.7))[0]
    assert skewed.untied_p < 0.001


def test_seeds_pool_into_one_group_and_records_without_tie_sizes_are_left_out():
    rng = np.random.default_rng(1)
    data = {"cnn-last1-w8a8-ptq": simulated(rng), "cnn-last1-w8a8-ptq-s1": simulated(rng)}
    old = {key: value for key, value in simulated(rng).items() if "top_size" not in key}
    rows = [record("cnn-last1-w8a8-ptq", 0, 0.1, 0.3), record("cnn-last1-w8a8-ptq-s1", 1, 0.3, 0.5),
            record("cnn-first1-w8a8-ptq-s1", 1)]
    (m,) = tie_direction.moves(rows, lambda r: data.get(r["case_id"], old))
    assert (m.label, m.seeds, m.examples) == ("cnn-last1-w8a8-ptq", 2, 8000)
    assert np.isclose(m.tie_aware_drop_pp, 0.2) and np.isclose(m.deployed_drop_pp, 0.4)
    assert tie_direction.group_label({"case_id": "mlp-last2-w8a8-s10", "seed": 10}) == "mlp-last2-w8a8"
    assert tie_direction.group_label({"case_id": "mlp-last2-w8a8-s1", "seed": 0}) == "mlp-last2-w8a8-s1"


def test_report_and_docs_block_read_the_run_folder_and_skip_a_tampered_file(tmp_path):
    rng = np.random.default_rng(2)
    rows = []
    for seed in range(3):
        case_id = "cnn-last1-w8a8-ptq" + (f"-s{seed}" if seed else "")
        row = make_record(case_id=case_id, model="cnn", n=1, method="ptq", seed=seed, accuracy_drop_pp=0.1,
                          deployed_drop_pp=0.2, **records.write_predictions(tmp_path, case_id, simulated(rng)))
        rows.append(row)
        (tmp_path / "cases" / f"{case_id}.json").write_text(json.dumps(row))
    read = tie_direction.reader(tmp_path)
    lines = tie_direction.section(rows, read)
    assert lines[0].startswith("## Ties") and "`cnn-last1-w8a8-ptq` (3 seeds, 12,000 test predictions)" in lines[-2]
    (tmp_path / "cases" / "cnn-last1-w8a8-ptq-s2.predictions.npz").write_bytes(b"not the file")
    assert "(2 seeds, 8,000 test predictions)" in tie_direction.section(rows, read)[-2]
    assert read(rows[2]) == {}
    block = docs_numbers.ties_block(tmp_path)
    assert block[0].startswith("- `cnn-last1-w8a8-ptq` (2 seeds")
