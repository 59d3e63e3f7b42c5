"""harness.analysis.attribution: a significant last-vs-first test is put on an end unit, on position, or on
neither, only as far as the inner comparison and the single-unit costs support. Pure: no TensorFlow."""

from types import SimpleNamespace

from harness.analysis import attribution, order_test, unit_costs

SIG = order_test.FINAL_CHEAPER


def comparison(diff, verdict, inner=False, counted=True, p_holm=0.02, seeds=10):
    test = SimpleNamespace(mean_diff_pp=diff, n_seeds=seeds, p_holm=p_holm, verdict=verdict, counted=counted)
    return SimpleNamespace(model="cnn", weight_bits=4, method="qat", primary="fraction", inner=inner, test=test)


def costs(detected_units=(0,), units=5):
    out = tuple(unit_costs.Cost(f"u{i} (unit {i})", (0.4,) * 10 if i in detected_units else (0.0,) * 10,
                                p_holm=0.01 if i in detected_units else 1.0, unit=i) for i in range(units))
    return unit_costs.GroupCosts("cnn", 4, "qat", "single", out, sd=0.2, detectable_pp=0.3)


def test_an_end_unit_alone_with_nothing_inside_is_put_on_the_end_unit():
    text = attribution.sentence(comparison(0.31, SIG), comparison(0.09, order_test.NO_DIFFERENCE, inner=True, p_holm=0.9),
                                costs((0,)), 5)
    assert "the data put it on an end unit: alone, u0 (unit 0) +0.40 pp" in text
    assert "the other 4 units nothing detectable alone" in text and "held out, the last N cost 0.09 pp less" in text


def test_the_same_direction_with_the_ends_held_out_is_position():
    text = attribution.sentence(comparison(0.31, SIG), comparison(0.2, SIG, inner=True), costs((0,)), 5)
    assert "a position effect" in text


def test_an_inner_unit_detectable_alone_is_not_hidden_and_no_claim_is_made():
    text = attribution.sentence(comparison(0.31, SIG), comparison(0.0, order_test.NO_DIFFERENCE, inner=True),
                                costs((0, 2)), 5)
    assert "cannot say what carries it" in text and "u2 (unit 2) +0.40 pp" in text and "end unit" not in text.split(":")[0]


def test_no_end_unit_and_no_inner_effect_cannot_be_attributed():
    text = attribution.sentence(comparison(0.31, SIG), comparison(0.0, order_test.NO_DIFFERENCE, inner=True), costs(()), 5)
    assert "cannot say what carries it: no end unit costs anything detectable alone" in text


def test_without_inner_or_single_cases_nothing_is_claimed():
    assert attribution.sentence(comparison(0.31, SIG), None, costs(), 5) == ""
    assert attribution.sentence(comparison(0.31, SIG), comparison(0.0, SIG, inner=True), None, 5) == ""


def test_only_significant_counted_whole_tests_get_a_sentence(monkeypatch):
    monkeypatch.setattr(attribution.unit_costs, "group_costs", lambda records: [costs((0,))])
    whole = [comparison(0.31, SIG), comparison(0.1, order_test.NO_DIFFERENCE), comparison(0.5, SIG, counted=False)]
    out = attribution.verdicts(attribution.attributed(whole + [comparison(0.0, order_test.NO_DIFFERENCE, inner=True)],
                                                      [{"model": "cnn", "units_total": 5}]))
    assert len(out) == 1 and "0.31 pp less" in out[0] and "on an end unit" in out[0]


def test_the_model_verdict_says_what_carries_a_significant_test(monkeypatch):
    from harness.analysis import fit_text

    whole = comparison(0.31, SIG)
    whole.test.matching, whole.test.p_value = "fraction", 0.002
    readings = {("cnn", 4, "qat"): attribution.READINGS["end unit"]}
    text = fit_text.model_verdict("cnn", [whole], [], readings)
    assert ": final layers cost less; by the single-unit cases an end unit's cost, and with the ends held out no " \
           "position effect detected" in text
    assert "end unit" not in fit_text.model_verdict("cnn", [whole], [])


def test_readings_name_the_kind_of_each_attributed_test(monkeypatch):
    monkeypatch.setattr(attribution.unit_costs, "group_costs", lambda records: [costs((0,))])
    comps = [comparison(0.31, SIG), comparison(0.0, order_test.NO_DIFFERENCE, inner=True)]
    found = attribution.attributed(comps, [{"model": "cnn", "units_total": 5}])
    assert attribution.readings(found) == {("cnn", 4, "qat"): attribution.READINGS["end unit"]}
