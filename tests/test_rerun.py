"""harness.analysis.rerun: how far each case moved between two runs of the same cases."""

import pytest

from harness.analysis import rerun

from test_baseline import record


def test_moves_pair_cases_with_the_same_config_and_summarise_per_group():
    a = [record(n=n, seed=s, drop=0.1 * n + 0.2 * s) for n in (1, 2) for s in (0, 1, 2)]
    b = [dict(r, accuracy_drop_pp=r["accuracy_drop_pp"] + (0.5 if r["n"] == 2 else -0.1)) for r in a]
    b.append(record(n=3, drop=9.0))  # only in run b: not a move
    b[0] = dict(b[0], config_hash="edited")  # another configuration: not comparable
    moved = rerun.moves(a, b)
    assert len(moved) == 5 and {round(m.delta, 6) for m in moved} == {-0.1, 0.5}
    (row,) = rerun.summary(a, b)
    assert row["group"] == "m/w8" and row["cases"] == 5
    assert row["max_abs_move_pp"] == pytest.approx(0.5) and row["median_abs_move_pp"] == pytest.approx(0.5)
    assert row["seed_sd_pp"] > 0 and row["control_moves_pp"] == [0.0]
    assert "m/w8" in "\n".join(rerun.format_summary([row]))
