"""harness.analysis.findings: the one-paragraph answer the report opens with and README.md carries.
Pure: no TensorFlow. The README block's match with results/reference is in tests/test_docs_numbers.py."""

from types import SimpleNamespace

from harness.analysis import findings, order_test, report, unit_costs
from test_attribution import comparison, costs
from test_report import synthetic


def group(model, bits, detectable, detected=(), order="single", differences=(), final=None, units=3):
    cells = tuple(unit_costs.Cost(f"u{i} (unit {i})", (0.5 if i in detected else 0.0,) * 10,
                                  p_holm=0.01 if i in detected else 1.0, unit=i) for i in range(units))
    return unit_costs.GroupCosts(model, bits, "qat", order, cells, sd=0.2, detectable_pp=detectable,
                                 differences=differences, final_kind=final)


def test_controls_give_each_models_range_seeds_and_test_set():
    records = [dict(model="cnn", seed=s, control_accuracy=a, n_test=10000, control_ties=0)
               for s, a in ((0, 0.913), (1, 0.918), (1, 0.918))] + [dict(model="mlp", seed=0, control_accuracy=0.95, n_test=1000, control_ties=0)]
    text = findings.controls(records)
    assert text == ("Float controls (tie-aware accuracy): cnn 0.913–0.918 (over 2 seeds, 10,000 test examples), "
                    "mlp 0.950 (over 1 seed, 1,000 test examples).")
    assert findings.controls([dict(records[0], control_ties=None)]).startswith("Float controls (accuracy)")


def test_units_alone_names_what_was_found_what_the_rest_could_show_and_what_misses_its_target():
    text = findings.units_alone([group("cnn", 4, 0.28, detected=(0,)), group("mlp", 8, 0.34),
                                 group("resnet20", 4, float("inf"))])
    assert text.startswith("Each unit quantized alone: cnn W4 QAT u0 (unit 0) +0.50 pp")
    assert "every other unit, width and method tested: nothing detectable, where the seeds could detect 0.28–0.34 pp" in text
    assert "(mlp W8 QAT misses the 0.2 pp (W8) / 0.5 pp (W4) target)" in text
    assert text.endswith("too few seeds to test resnet20 W4 QAT.")
    quiet = findings.units_alone([group("cnn", 8, 0.09)])
    assert "no unit at any width or method costs anything detectable" in quiet and "within the" in quiet


def test_last_vs_first_attributes_what_it_can_and_counts_the_rest(monkeypatch):
    whole = comparison(0.31, order_test.FINAL_CHEAPER)
    bare = SimpleNamespace(**{**vars(comparison(0.2, order_test.FINAL_CHEAPER)), "model": "mlp"})
    quiet = [comparison(0.0, order_test.NO_DIFFERENCE, inner=True), comparison(0.0, order_test.NO_DIFFERENCE)]
    monkeypatch.setattr(findings.attribution, "attributed", lambda comps, records, groups=None: [(whole, findings.attribution.Attribution("end unit", "ATTRIBUTED.")), (bare, None)])
    text = findings.last_vs_first([whole, bare] + quiet, [])
    assert text.startswith("ATTRIBUTED. mlp W4 QAT: the last N cost 0.20 pp less than the first N")
    assert "no inner or single-unit cases to say whether position or an end unit carries it." in text
    assert text.endswith("The other 2 declared last-vs-first tests (whole, and with the first and last unit held out): "
                         "no significant difference.")
    assert findings.last_vs_first([comparison(0.3, order_test.FINAL_CHEAPER, counted=False)], []) == ""


def test_the_seed_reports_claim_is_judged_once_per_model_over_its_widths():
    pair = (unit_costs.Cost("attention - dense", (0.1, -0.1) * 5, p_holm=0.8),)
    groups = [group("minilm2", bits, 0.6, order="type", differences=pair, final="dense") for bits in (8, 4)]
    text = findings.hypothesis_text(groups)
    assert text.startswith("minilm2: the seed report's claim that attention costs more than the final layer (dense) "
                           "is not supported: no detectable difference (attention - dense +0.00 pp")
    assert "at W8 QAT (Holm p 0.8)" in text and "at W4 QAT (Holm p 0.8)" in text


def test_the_report_opens_with_the_paragraph(tmp_path):
    records = synthetic(seeds=range(8))
    text = report.write_report(records, tmp_path).path.read_text()
    paragraph = findings.paragraph(records)
    assert paragraph and f"## In one paragraph\n\n{paragraph}\n" in text
    assert text.index("## In one paragraph") < text.index("## Verdicts")
    assert findings.paragraph([]) == ""
