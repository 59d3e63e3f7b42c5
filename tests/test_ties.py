"""Tie-aware accuracy (harness/case/paired.py, issue 32 item 1). Pure: no TensorFlow.

INT8 logits tie for the top score; argmax then returns the lowest tied class index, so a quantized
model gains or loses accuracy by class order. A tie among k classes that includes the true one counts
1/k: the bias is gone, and without ties nothing changes."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.case import paired


def test_a_tie_counts_one_over_its_size_and_argmax_is_kept_as_deployed():
    outputs = np.array([[3, 3, 0], [1, 5, 5], [0, 2, 7], [4, 4, 4]], dtype=float)
    y = np.array([1, 1, 2, 0])
    top = paired.top_set(outputs, y)
    assert top.labels.tolist() == [0, 1, 2, 0] and top.size.tolist() == [2, 2, 1, 3]
    assert np.allclose(top.score, [0.5, 0.5, 1.0, 1 / 3]) and top.ties == 3
    assert top.right.tolist() == [False, True, True, True]  # what a device's argmax gets right


@settings(max_examples=80, deadline=None)
@given(st.integers(2, 60), st.integers(2, 10), st.integers(0, 2 ** 31))
def test_without_ties_the_evidence_is_exactly_the_label_evidence(n, classes, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    control, quant = (rng.permutation(n * classes).reshape(n, classes).astype(float) for _ in range(2))
    aware = paired.tie_aware_evidence(paired.top_set(control, y), paired.top_set(quant, y))
    by_labels = paired.evidence(y, control.argmax(-1), quant.argmax(-1))
    assert aware["control_ties"] == aware["quant_ties"] == 0
    for key, value in by_labels.items():
        assert aware[key] == value, key
    assert np.isclose(aware["deployed_drop_pp"], aware["paired_drop_pp"])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 50), st.integers(2, 6), st.integers(0, 2 ** 31))
def test_expected_table_sums_to_n_and_its_drop_is_the_mean_score_difference(n, classes, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    control, quant = (rng.integers(0, 3, (n, classes)).astype(float) for _ in range(2))  # many ties
    c, q = paired.top_set(control, y), paired.top_set(quant, y)
    table = paired.expected_counts(c, q)
    assert np.isclose(table.n, n)
    assert np.isclose(table.drop, np.mean(c.score - q.score))
    low, high = paired.newcombe_interval(table)
    assert -1.0 <= low <= table.drop <= high <= 1.0


def tied_pair(rng, n=3000, classes=10, tie_rate=0.3):
    """Ground truth: the quantized model equals its control (right on every example by a wide margin)
    except that on ``tie_rate`` of the examples the true class shares the top score with one other."""
    y = rng.integers(0, classes, n)
    control = rng.normal(size=(n, classes))
    control[np.arange(n), y] += 10.0
    quant = control.copy()
    tied = np.flatnonzero(rng.random(n) < tie_rate)
    other = (y[tied] + rng.integers(1, classes, len(tied))) % classes
    quant[tied, other] = quant[tied, y[tied]]
    return y, control, quant


def test_tie_aware_accuracy_is_what_random_tie_breaking_gives_and_ignores_class_order():
    rng = np.random.default_rng(7)
    y, control, quant = tied_pair(rng)
    top = paired.top_set(quant, y)
    # the expectation, measured: break every tie at random many times
    draws = [np.mean([rng.choice(np.flatnonzero(row == row.max())) == t for row, t in zip(quant, y)])
             for _ in range(40)]
    assert abs(np.mean(top.score) - np.mean(draws)) < 4 * np.std(draws) / np.sqrt(len(draws)) + 1e-9
    # renumbering the classes changes what argmax deploys, not the tie-aware accuracy
    order = rng.permutation(control.shape[1])
    renumbered = paired.top_set(quant[:, np.argsort(order)], order[y])
    assert np.isclose(np.mean(renumbered.score), np.mean(top.score))
    flipped = paired.top_set(quant[:, ::-1], control.shape[1] - 1 - y)  # reversed class order
    assert np.mean(flipped.right) != np.mean(top.right)


def test_changed_predictions_skew_to_lower_classes_only_under_argmax():
    """The issue's symptom: every tie argmax breaks moves the prediction to the lower class index."""
    rng = np.random.default_rng(11)
    y, control, quant = tied_pair(rng)
    deployed = paired.top_set(quant, y).labels
    changed = deployed != control.argmax(-1)
    assert changed.any() and np.all(deployed[changed] < y[changed])
    # broken at random, the moves go either way: lower and higher within binomial noise (3 SD)
    fair = np.array([rng.choice(np.flatnonzero(row == row.max())) for row in quant])
    moved = fair != y
    lower = int(np.sum(fair[moved] < y[moved]))
    assert abs(lower - moved.sum() / 2) < 3 * np.sqrt(moved.sum() / 4)
