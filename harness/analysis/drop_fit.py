"""Accuracy-drop formulas vs N, one fit per group (model, order, weight_bits, method). Pure.

The candidate forms and the fit of one form live in ``harness.analysis.drop_forms`` (re-exported here).

What is fitted: the seed means at each measured N (duplicate runs of one (N, seed) averaged
first), weighted by the number of seeds. The shape of the curve is only known at distinct N, so a
form needs more N means than parameters + 1 (else it is skipped, with the reason), and a group
needs >= 3 distinct N > 0. N = 0 is used as data, except when every drop there is exactly 0: then it
is 0 by construction (nothing quantized, the control itself), carries no information, and would
only pull a constant towards 0 and flatter every error; it is left out of the fit and the noise.
Among the trend forms the lowest AICc wins; when no fitted form has a defined AICc they all have the
same number of parameters and the lowest residual wins. A fitted parameter sitting on its bound (the
power exponent at POWER_MAX_EXPONENT, a saturating rate at its limit) is flagged in
``FormFit.at_bound``. The flat forms (zero, constant) are always fitted beside them: the winner is
reported as a trend only when it beats the better flat form by AICc and by leave-one-seed-out error
and its trend parameter's seed-level interval excludes 0 (``harness.analysis.drop_trend``); otherwise
``GroupFit.trend`` is False, ``best`` is the flat form and the report says "no trend detectable".

Prediction band for ONE new run at N (``interval="prediction"``); the target is the
accuracy_drop_pp that run would record on the benchmark's test split:

  var = curve + seed shift + run
  curve       g' Cov g, delta method on the fit of the N means (its residual variance includes any
              lack of fit);
  seed shift  every N mean carries the same seeds' shifts, which the fit partly follows:
              sigma2_shift * sum_s (g' V_s)^2 with V_s the parameter response to seed s's shift;
  run         the pooled within-N variance across seeds (``seedstats.noise_model``): one new run
              brings its own seed shift and its own run noise.
  The across-seed variance already contains the test-set counting noise (each model errs on
  other examples), so the binomial variance of a paired drop, ((b+c)/n - ((b-c)/n)^2)/n from the
  record's discordant counts, is NOT added: it is a floor for the run term (max, not sum), which
  guards against a spread estimated from a few seeds coming out implausibly small. Without two
  seeds at any N the run term is the fit's residual variance and the note says seed-to-seed
  variance could not be separated. The t quantile uses Satterthwaite's dof: with 3 seeds the
  band is wide whatever the number of N. ``interval="confidence"`` (the mean curve, shaded in
  plots) is curve + seed shift. Simulated coverage of one new run (tests/test_simulation.py):
  0.93 at 3-4 seeds, 0.94 at 6, 0.95 without a seed effect; the plug-in dof is the shortfall.

Fraction form at an N without records: with a ``unit_table`` in the records the exact fraction at
every N comes from ``select`` (``GroupFit.fraction_source == "unit_table"``); else f is interpolated
between measured N and, outside them, predictions fall back to the best N-based form (noted).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from harness.results import seedstats
from harness.design.config import Selection
from harness.analysis import drop_trend
from harness.analysis.drop_forms import (CONFIDENCE, FLAT, FLAT_FORMS, FORMS, FORMS_BY_NAME,  # noqa: F401 (API)
                                         POWER_MAX_EXPONENT, Form, FormFit, enough_points, fit_form, predict_form)
from harness.design.select import select
from harness.design.units import Unit

MIN_DISTINCT_N = 3  # distinct N > 0
MEASURED = seedstats.MEASURED


@dataclass(frozen=True)
class GroupFit:
    model: str
    order: str
    weight_bits: int
    method: str
    n_points: int  # measured records used
    n_values: tuple  # distinct N, 0 included
    fitted: bool
    reason: str  # why there is no fit, or how the winner was picked
    best: Optional[FormFit]
    candidates: tuple  # FormFit, best first
    fractions: tuple  # ((n, param_fraction), ...) including (0, 0.0)
    units_total: Optional[int]
    selection: str  # "aicc", "rss" or "" (no fit)
    skipped: tuple = ()  # "form: why it was not fitted", ...
    noise: Optional[seedstats.Noise] = None
    sampling_var: tuple = ()  # ((n, mean binomial variance of a paired drop, pp²), ...)
    fraction_source: str = "measured"  # or "unit_table"
    seeds: int = 0
    trend: bool = False  # the best trend form beats the flat model (drop_trend.decide); else best is flat
    trend_reason: str = ""
    flat: tuple = ()  # FormFit of the flat forms (zero, constant), best first
    level: tuple = ()  # (mean, low, high, seeds): seed-level mean drop over the fitted N
    zero_by_construction: bool = False  # N = 0 measured, every drop exactly 0: not fitted

    @property
    def key(self) -> tuple:
        return (self.model, self.order, self.weight_bits, self.method)

    @property
    def trend_best(self) -> Optional[FormFit]:
        """The best trend form by AICc, whether or not it beat the flat model."""
        return self.candidates[0] if self.candidates else None


@dataclass(frozen=True)
class Prediction:
    n: int
    form: str
    drop_pp: float
    lower95: float
    upper95: float
    interval: str  # "prediction" or "confidence"
    fraction: Optional[float]
    note: str
    dof: float = math.inf
    parts: tuple = ()  # (("curve", var), ("seed shift", var), ("run", var)) in pp²


as_number = seedstats.as_number  # a finite float, or None


def usable(record: dict) -> bool:
    """A point for fitting: a measured record (passed/failed) with N and a finite accuracy drop."""
    return record.get("n") is not None and seedstats.drop_of(record) is not None


def measured(records) -> list:
    """Records that carry numbers: status passed/failed with a usable accuracy drop (report, docs, findings)."""
    return [r for r in records if r.get("status") in MEASURED and usable(r)]


def group_key(record: dict) -> tuple:
    return (record.get("model"), record.get("order"), record.get("weight_bits"), record.get("method") or "qat")


def group_records(records: Iterable[dict], orders: Optional[Sequence[str]] = None) -> dict:
    """{(model, order, weight_bits, method): [records]} in sorted key order."""
    groups = defaultdict(list)
    for record in records:
        if orders is None or record.get("order") in orders:
            groups[group_key(record)].append(record)
    return {key: groups[key] for key in sorted(groups, key=lambda k: tuple(str(part) for part in k))}


def fraction_map(records: Iterable[dict]) -> tuple:
    """((n, median param_fraction), ...) sorted by n, with the anchor (0, 0.0)."""
    seen = defaultdict(list)
    for record in records:
        f = as_number(record.get("param_fraction"))
        if record.get("n") is not None and f is not None:
            seen[int(record["n"])].append(f)
    table = {n: float(np.median(v)) for n, v in seen.items()}
    table.setdefault(0, 0.0)
    return tuple(sorted(table.items()))


def interpolate(table: Sequence, n: float) -> Optional[float]:
    """Value at N from ((n, value), ...): exact, or linear between measured N; None outside them."""
    if not table:
        return None
    ns = np.array([p[0] for p in table], float)
    if n < ns.min() or n > ns.max():
        return None
    return float(np.interp(n, ns, [p[1] for p in table]))


fraction_at = interpolate  # param_fraction at N from GroupFit.fractions

UNIT_FIELDS = ("index", "kind", "weight_layer", "kernel_params", "bias_params", "channels", "kernels")


def units_from_records(records: Iterable[dict]) -> Optional[tuple]:
    """The model's units from the first record with a usable ``unit_table``; None for old records."""
    for record in records:
        table = record.get("unit_table")
        if not isinstance(table, list) or not table:
            continue
        try:
            return tuple(Unit(**{k: row[k] for k in UNIT_FIELDS if k in row}, members=()) for row in table)
        except (TypeError, KeyError):
            continue
    return None


def exact_fraction(units: Sequence[Unit], order: str, n: int) -> float:
    """Share of the model's parameters (kernels + biases) that quantizing ``order`` N units selects."""
    total = sum(u.params for u in units)
    return sum(u.params for u in select(units, Selection(order, int(n)))) / total if total else 0.0


def _n_means(points: Sequence[dict]) -> tuple:
    """(ns, seed means, seeds per N, seed sets, cells): seed-level means of the drop at each N."""
    cells = seedstats.cell_means(points, key=lambda r: int(r["n"]))
    per_n = defaultdict(dict)
    for (n, seed), v in cells.items():
        per_n[n][seed] = v
    ns = np.array(sorted(per_n), float)
    means = np.array([np.mean(list(per_n[n].values())) for n in sorted(per_n)])
    sets = [frozenset(per_n[n]) for n in sorted(per_n)]
    return ns, means, np.array([len(s) for s in sets], float), sets, cells


def _fractions(records: Sequence[dict], points: Sequence[dict], order, total) -> tuple:
    """(((n, f), ...), source): exact at every N from the unit table when present, else measured."""
    units = units_from_records(records)
    if units is not None and order in ("first", "last") and (total is None or total == len(units)):
        return tuple((n, exact_fraction(units, order, n)) for n in range(len(units) + 1)), "unit_table"
    return fraction_map(points), "measured"


def _sampling_table(points: Sequence[dict]) -> tuple:
    seen = defaultdict(list)
    for r in points:
        v = seedstats.sampling_var_pp2(r)
        if v is not None:
            seen[int(r["n"])].append(v)
    return tuple(sorted((n, float(np.mean(v))) for n, v in seen.items()))


def _or_nan(value: Optional[float]) -> float:
    return math.nan if value is None else value


def _fit_candidates(forms, ns, means, counts, sets, fractions) -> tuple:
    """(fits, skipped reasons) of every form on the N means."""
    fits, skipped = [], []
    for form in forms:
        k, m = len(form.params), len(ns)
        if not enough_points(m, k):
            skipped.append(f"{form.name}: {m} N means <= {k} parameter{'s' if k > 1 else ''} + 1")
            continue
        x = ns
        if form.variable == "fraction":
            x = np.array([_or_nan(fraction_at(fractions, n)) for n in ns])
            if np.isnan(x).any():
                skipped.append(f"{form.name}: param_fraction unknown at some N")
                continue
        fitted = fit_form(form, x, means, n_for_loo=ns, weights=counts, seed_sets=sets)
        if fitted is None:
            skipped.append(f"{form.name}: the solver failed")
        else:
            fits.append(fitted)
    return fits, skipped


def _n_means_fitted(points: Sequence[dict]) -> tuple:
    """_n_means without N = 0 when every drop there is exactly 0 (see the module docstring); + that flag."""
    ns, means, counts, sets, cells = _n_means(points)
    zero_cells = [v for (n, _), v in cells.items() if n == 0]
    if not zero_cells or any(v != 0.0 for v in zero_cells):
        return ns, means, counts, sets, cells, False
    keep = ns != 0
    cells = {key: v for key, v in cells.items() if key[0] != 0}
    return ns[keep], means[keep], counts[keep], [s for s, k in zip(sets, keep) if k], cells, True


def _x_of(fractions) -> callable:
    """x of a form at an array of N: N itself, or the quantized param fraction (nan where unknown)."""
    return lambda form, ns: (np.array([_or_nan(fraction_at(fractions, n)) for n in ns]) if form.variable == "fraction"
                             else np.asarray(ns, float))


def _choose(forms, ns, means, counts, sets, cells, fractions) -> dict:
    """Trend candidates and flat forms with their seed-level numbers, the verdict and the winner."""
    trend_forms = [f for f in forms if f.name not in FLAT]
    fits, skipped = _fit_candidates(trend_forms, ns, means, counts, sets, fractions)
    flats, _ = _fit_candidates(FLAT_FORMS, ns, means, counts, sets, fractions)
    table, x_of = drop_trend.seed_table(cells, set(ns.tolist())), _x_of(fractions)
    fits = sorted((drop_trend.seed_level(f, table, x_of) for f in fits), key=lambda f: (f.aicc, f.aic))
    flats = [drop_trend.seed_level(f, table, x_of) for f in flats]
    flats.sort(key=drop_trend.criterion(flats)[1])
    if fits and math.isfinite(fits[0].aicc):
        selection, reason = "aicc", f"best of {len(fits)} trend forms by AICc"
    elif fits:  # every fitted form has the same parameter count and m = k + 2 points: AICc undefined
        fits.sort(key=lambda f: f.rss)
        selection, reason = "rss", f"AICc undefined with {len(ns)} N means: lowest residual of {len(fits)} forms"
    else:
        selection, reason = "", "no trend form could be fitted: " + "; ".join(skipped)
    trend, trend_reason = drop_trend.decide(fits[0] if fits else None, flats[0])
    return dict(fitted=True, reason=reason, best=fits[0] if trend else flats[0], candidates=tuple(fits),
                selection=selection, skipped=tuple(skipped), trend=trend, trend_reason=trend_reason,
                flat=tuple(flats), level=drop_trend.level(table))


def fit_group(records: Sequence[dict], forms: Sequence[Form] = FORMS) -> GroupFit:
    """Fit every candidate form and the flat forms to one group's N means; pick the winner (see the
    module docstring). ``forms`` chooses the trend candidates; the flat forms are always fitted."""
    points = [r for r in records if usable(r)]
    key = group_key(records[0]) if records else (None, None, None, None)
    ns, means, counts, sets, cells, zero_out = _n_means_fitted(points)
    totals = [int(r["units_total"]) for r in records if r.get("units_total") is not None]
    total = max(totals) if totals else None
    fractions, source = _fractions(records, points, key[1], total)
    base = dict(model=key[0], order=key[1], weight_bits=key[2], method=key[3], n_points=len(points),
                n_values=tuple(int(v) for v in ns), fractions=fractions, units_total=total,
                noise=seedstats.noise_model(cells), sampling_var=_sampling_table(points),
                fraction_source=source, seeds=len({s for _, s in cells}), zero_by_construction=zero_out)
    positive = int(np.sum(ns > 0))
    if positive < MIN_DISTINCT_N:
        reason = f"not enough N to fit: {positive} distinct N > 0, need {MIN_DISTINCT_N}"
        return GroupFit(fitted=False, reason=reason, best=None, candidates=(), selection="", **base)
    return GroupFit(**base, **_choose(forms, ns, means, counts, sets, cells, fractions))


def fit_records(records: Iterable[dict], orders: Optional[Sequence[str]] = ("last", "first")) -> tuple:
    """One GroupFit per (model, order, weight_bits, method) group among ``orders`` (None: all)."""
    return tuple(fit_group(group) for group in group_records(records, orders).values())


def _sampling_at(group: GroupFit, n: float) -> float:
    if not group.sampling_var:
        return 0.0
    return float(np.interp(n, [p[0] for p in group.sampling_var], [p[1] for p in group.sampling_var]))


def predict(group: GroupFit, n: int, *, form: Optional[str] = None, fraction: Optional[float] = None,
            interval: str = "prediction") -> Optional[Prediction]:
    """Predicted drop at N with a 95% band; None when the group has no fit.

    Uses ``form`` if given, else the best form. A fraction form with unknown f at this N falls
    back to the best N-based candidate (see the module docstring).
    """
    if not group.fitted:
        return None
    pool = [c for c in (group.best,) + group.candidates + group.flat if form is None or c.form == form]
    if not pool:
        raise ValueError(f"form {form!r} was not fitted for this group")
    chosen, notes = pool[0], []
    f = fraction if fraction is not None else fraction_at(group.fractions, n)
    if chosen.variable == "fraction" and f is None:
        fallback = [c for c in group.candidates if c.variable == "n"]
        if not fallback:
            return None
        notes.append(f"param fraction unknown at N={n}; used {fallback[0].form} instead of fraction form")
        chosen = fallback[0]
    if group.noise is None and interval == "prediction":
        notes.append("no N has two seeds: the band uses the fit residuals, seed-to-seed variance not separated")
    x = f if chosen.variable == "fraction" else n
    estimate, low, high, dof, parts = predict_form(chosen, x, interval, group.noise, _sampling_at(group, n))
    return Prediction(n=int(n), form=chosen.form, drop_pp=estimate, lower95=low, upper95=high, interval=interval,
                      fraction=f, note="; ".join(notes), dof=dof, parts=parts)


def curve(group: GroupFit, ns: Sequence[float], interval: str = "confidence") -> tuple:
    """(n, estimate, lower, upper) arrays of the best form over ``ns`` (for plots); skips unknown f."""
    out, best = [], group.best
    for n in ns if best is not None else ():
        x = fraction_at(group.fractions, n) if best.variable == "fraction" else n
        if x is not None:
            out.append((n, *predict_form(best, x, interval, group.noise, _sampling_at(group, n))[:3]))
    arr = np.array(out, float).reshape(-1, 4)
    return arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
