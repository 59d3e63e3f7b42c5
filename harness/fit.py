"""Accuracy-drop formulas vs N, one fit per group (model, order, weight_bits, method). Pure.

Candidate forms (``FORMS``), each fitted by least squares with ``scipy.optimize.curve_fit``:

  linear      drop = a*N                 (through the origin: N=0 quantizes nothing)
  affine      drop = a + b*N
  fraction    drop = a*f                 (f = param_fraction, the quantized share of weights)
  power       drop = a*N^b
  saturating  drop = a*(1 - exp(-b*N))

Every record of a group is a point (several seeds per N are fine). The form with the lowest
AICc (K = fitted parameters + 1 for the noise variance) wins. When no form has a defined AICc
(too few points: n - K - 1 <= 0) the plain AIC decides and ``GroupFit.selection`` says "aic".
Parameter intervals are 95% Wald intervals: estimate +- t(0.975, n-k) * sqrt(diag(cov)), with
cov the residual-variance-scaled covariance from curve_fit. The two-parameter a*g(x, b) forms
start curve_fit at a profile-likelihood optimum (a is linear given b; b scanned on a log grid),
which the leave-one-N-out refits use directly.

``predict`` returns the estimate with a two-sided 95% band from the delta method (numerical
gradient of the formula wrt the parameters). ``interval="prediction"`` (default) adds the residual
variance, i.e. it bounds the drop of one new run at that N; ``interval="confidence"`` bounds the
mean curve (what the report shades).

Fraction form at a new N: f is looked up in the N -> param_fraction map built from the records
(plus the anchor N=0 -> f=0), and interpolated linearly between measured N. Outside the measured
N range f is unknown (it depends on layer sizes), so predictions fall back to the best N-based
form and say so in ``Prediction.note`` -- unless the caller passes ``fraction=`` explicitly.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from scipy import optimize, stats

MIN_DISTINCT_N = 3
CONFIDENCE = 0.95
MEASURED = ("passed", "failed")


# A drop growing faster than N^3 over a handful of N is a step, not a trend: with b up to 10 the
# AICc winner for cnn W4 (drop only at N = 5) was 6.6e-08 × N^10, which predicts nothing useful.
POWER_MAX_EXPONENT = 3.0


@dataclass(frozen=True)
class Form:
    name: str
    variable: str  # "n" or "fraction"
    params: tuple
    func: Callable
    template: str  # str.format template, one {} per parameter
    bounds: tuple = (-np.inf, np.inf)


FORMS = (
    Form("linear", "n", ("a",), lambda x, a: a * x, "drop_pp ≈ {} × N"),
    Form("affine", "n", ("a", "b"), lambda x, a, b: a + b * x, "drop_pp ≈ {} + {} × N"),
    Form("fraction", "fraction", ("a",), lambda x, a: a * x, "drop_pp ≈ {} × f  (f = quantized param fraction)"),
    Form("power", "n", ("a", "b"), lambda x, a, b: a * np.power(x, b), "drop_pp ≈ {} × N^{}",
         ((-np.inf, 1e-3), (np.inf, POWER_MAX_EXPONENT))),
    Form("saturating", "n", ("a", "b"), lambda x, a, b: -a * np.expm1(-b * x), "drop_pp ≈ {} × (1 − e^(−{} × N))",
         ((-np.inf, 1e-4), (np.inf, 50.0))),
)
FORMS_BY_NAME = {form.name: form for form in FORMS}


@dataclass(frozen=True)
class FormFit:
    form: str
    variable: str
    param_names: tuple
    params: tuple
    ci_low: tuple
    ci_high: tuple
    cov: tuple  # k x k, as nested tuples
    sigma: float  # residual standard deviation, sqrt(RSS / (n - k))
    dof: int
    n_points: int
    rss: float
    r2: float
    aic: float
    aicc: float  # inf when undefined (too few points)
    loo_rmse: float  # leave-one-N-out RMSE; nan when no fold could be fitted
    formula: str


@dataclass(frozen=True)
class GroupFit:
    model: str
    order: str
    weight_bits: int
    method: str
    n_points: int
    n_values: tuple
    fitted: bool
    reason: str  # why there is no fit, or how the winner was picked
    best: Optional[FormFit]
    candidates: tuple  # FormFit, best first
    fractions: tuple  # ((n, param_fraction), ...) including the anchor (0, 0.0)
    units_total: Optional[int]
    selection: str  # "aicc", "aic" or "" (no fit)

    @property
    def key(self) -> tuple:
        return (self.model, self.order, self.weight_bits, self.method)


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


@dataclass(frozen=True)
class SizeCheck:
    model: str
    order: str
    weight_bits: int
    method: str
    n_records: int
    max_rel_error: Optional[float]
    worst_case_id: Optional[str]
    tolerance: float
    ok: bool


def as_number(value) -> Optional[float]:
    """A finite float, or None (None, bools, text, nan, inf)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def usable(record: dict) -> bool:
    """A point for fitting: has N and a finite accuracy drop."""
    return record.get("n") is not None and as_number(record.get("accuracy_drop_pp")) is not None


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


def _start(form: Form, x: np.ndarray, y: np.ndarray) -> list:
    """Starting parameters: closed-form least squares where the form is linear, else a profile search."""
    if form.name in ("linear", "fraction"):
        sxx = float(np.dot(x, x))
        return [float(np.dot(x, y) / sxx) if sxx > 0 else 1.0]
    if form.name == "affine":
        b, a = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, float(np.mean(y)))
        return [float(a), float(b)]
    return _profile_start(form, x, y)


def _profile_start(form: Form, x: np.ndarray, y: np.ndarray) -> list:
    """[a, b] for a*g(x, b) forms: a is linear given b, so scan b on a log scale, then refine."""
    lo, hi = form.bounds[0][1], form.bounds[1][1]

    def rss_and_a(log_b):
        g = form.func(x, 1.0, math.exp(log_b))
        gg = float(np.dot(g, g))
        a = float(np.dot(g, y) / gg) if gg > 0 else 0.0
        return float(np.sum((y - a * g) ** 2)), a

    grid = np.linspace(math.log(lo), math.log(hi), 41)
    best = min(grid, key=lambda v: rss_and_a(v)[0])
    step = grid[1] - grid[0]
    res = optimize.minimize_scalar(lambda v: rss_and_a(v)[0], bounds=(max(best - step, grid[0]), min(best + step, grid[-1])),
                                   method="bounded", options={"xatol": 1e-6})
    log_b = float(res.x) if res.fun <= rss_and_a(best)[0] else float(best)
    return [rss_and_a(log_b)[1], math.exp(log_b)]


def _curve_fit(form: Form, x: np.ndarray, y: np.ndarray, p0: Sequence[float]):
    """(params, cov, rss), or None when the fit fails.

    Bounded forms start at the profile optimum and get few evaluations; if the solver does not
    converge in time the start is kept, with the Jacobian covariance.
    """
    bounded = form.bounds != (-np.inf, np.inf)
    p0 = np.asarray(p0, float)
    if bounded:
        p0 = np.clip(p0, np.array(form.bounds[0]) + 1e-12, np.array(form.bounds[1]) - 1e-12)
    kwargs = {"bounds": form.bounds, "max_nfev": 50} if bounded else {"maxfev": 5000}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, cov = optimize.curve_fit(form.func, x, y, p0=p0, **kwargs)
    except RuntimeError:
        if not bounded:
            return None
        jac = np.array([_gradient(form, xi, p0) for xi in x])  # s^2 (J'J)^-1, as curve_fit computes it
        cov = np.linalg.pinv(jac.T @ jac) * float(np.sum((y - form.func(x, *p0)) ** 2)) / max(len(y) - len(p0), 1)
        params = p0
    except (ValueError, FloatingPointError, optimize.OptimizeWarning):
        return None
    rss = float(np.sum((y - form.func(x, *params)) ** 2))
    return (params, cov, rss) if math.isfinite(rss) else None


def _information(rss: float, m: int, k: int, y: np.ndarray) -> tuple:
    rss = max(rss, 1e-12 * (1.0 + float(np.dot(y, y))))
    big_k = k + 1  # + noise variance
    aic = m * math.log(rss / m) + 2 * big_k
    aicc = aic + 2 * big_k * (big_k + 1) / (m - big_k - 1) if m - big_k - 1 > 0 else math.inf
    return aic, aicc


def _format(form: Form, params: Sequence[float]) -> str:
    return form.template.format(*(f"{p:.3g}" for p in params))


def fit_form(form: Form, x: Sequence[float], y: Sequence[float], n_for_loo: Optional[Sequence] = None,
             loo: bool = True) -> Optional[FormFit]:
    """Fit one form to (x, y); None when it cannot be fitted (needs more points than parameters).

    ``n_for_loo``: the N of each point (defaults to x) for the leave-one-N-out error; loo=False skips it.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    m, k = len(y), len(form.params)
    if m <= k:
        return None
    found = _curve_fit(form, x, y, _start(form, x, y))
    if found is None:
        return None
    params, cov, rss = found
    dof = m - k
    cov = np.atleast_2d(np.asarray(cov, float))
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, dof) * np.sqrt(np.clip(np.diag(cov), 0, None))
    half = np.where(np.isfinite(np.diag(cov)), half, np.inf)
    tss = float(np.sum((y - y.mean()) ** 2))
    aic, aicc = _information(rss, m, k, y)
    loo_rmse = _loo_rmse(form, x, y, np.asarray(n_for_loo if n_for_loo is not None else x, float), params) if loo else math.nan
    return FormFit(
        form=form.name, variable=form.variable, param_names=form.params,
        params=tuple(float(p) for p in params),
        ci_low=tuple(float(v) for v in params - half), ci_high=tuple(float(v) for v in params + half),
        cov=tuple(tuple(float(v) for v in row) for row in cov),
        sigma=math.sqrt(rss / dof), dof=dof, n_points=m, rss=rss,
        r2=1.0 - rss / tss if tss > 0 else math.nan, aic=aic, aicc=aicc,
        loo_rmse=loo_rmse, formula=_format(form, params),
    )


def _loo_rmse(form: Form, x: np.ndarray, y: np.ndarray, ns: np.ndarray, full_params) -> float:
    """Hold out every point of one N at a time, refit, predict them; RMSE over all held-out points.

    Two-parameter a*g(x, b) forms are refitted by the profile search alone (fast, no covariance needed).
    """
    errors = []
    for held in np.unique(ns):
        train = ns != held
        if len(np.unique(ns[train])) < 2 or train.sum() <= len(form.params):
            continue
        if form.bounds != (-np.inf, np.inf):
            params = _profile_start(form, x[train], y[train])
        else:
            found = _curve_fit(form, x[train], y[train], full_params)
            if found is None:
                continue
            params = found[0]
        errors.extend(y[~train] - form.func(x[~train], *params))
    return math.sqrt(float(np.mean(np.square(errors)))) if errors else math.nan


def fit_group(records: Sequence[dict], forms: Sequence[Form] = FORMS) -> GroupFit:
    """Fit every candidate form to one group's records and pick the best by AICc."""
    points = [r for r in records if usable(r)]
    key = group_key(records[0]) if records else (None, None, None, None)
    ns = np.array([int(r["n"]) for r in points], float)
    y = np.array([as_number(r["accuracy_drop_pp"]) for r in points], float)
    fractions = fraction_map(points)
    totals = [r.get("units_total") for r in records if r.get("units_total") is not None]
    n_values = tuple(int(v) for v in np.unique(ns))
    base = dict(model=key[0], order=key[1], weight_bits=key[2], method=key[3], n_points=len(points),
                n_values=n_values, fractions=fractions, units_total=int(max(totals)) if totals else None)
    if len(n_values) < MIN_DISTINCT_N:
        reason = f"not enough N to fit: {len(n_values)} distinct N, need {MIN_DISTINCT_N}"
        return GroupFit(fitted=False, reason=reason, best=None, candidates=(), selection="", **base)
    fits = []
    for form in forms:
        if form.variable == "fraction":
            fs = [as_number(r.get("param_fraction")) for r in points]
            if any(f is None for f in fs):
                continue
            fitted = fit_form(form, fs, y, n_for_loo=ns)
        else:
            fitted = fit_form(form, ns, y)
        if fitted is not None:
            fits.append(fitted)
    if not fits:
        return GroupFit(fitted=False, reason="no candidate form could be fitted", best=None,
                        candidates=(), selection="", **base)
    selection = "aicc" if any(math.isfinite(f.aicc) for f in fits) else "aic"
    fits.sort(key=lambda f: (f.aicc if selection == "aicc" else f.aic))
    reason = f"best of {len(fits)} forms by {'AICc' if selection == 'aicc' else 'AIC'}"
    return GroupFit(fitted=True, reason=reason, best=fits[0], candidates=tuple(fits), selection=selection, **base)


def fit_records(records: Iterable[dict], orders: Optional[Sequence[str]] = ("last", "first")) -> tuple:
    """One GroupFit per (model, order, weight_bits, method) group among ``orders`` (None: all)."""
    return tuple(fit_group(group) for group in group_records(records, orders).values())


def _gradient(form: Form, x: float, params: np.ndarray) -> np.ndarray:
    """Central-difference d f(x; p) / dp."""
    steps = 1e-6 * np.maximum(np.abs(params), 1.0)
    value = lambda p: form.func(np.array([float(x)]), *p)[0]  # noqa: E731
    return np.array([(value(params + e) - value(params - e)) / (2 * h) for e, h in zip(np.diag(steps), steps)])


def predict_form(fit: FormFit, x: float, interval: str = "prediction") -> tuple:
    """(estimate, lower95, upper95) of one fitted form at x (N, or f for the fraction form)."""
    if interval not in ("prediction", "confidence"):
        raise ValueError(f"interval must be 'prediction' or 'confidence', got {interval!r}")
    form = FORMS_BY_NAME[fit.form]
    params = np.array(fit.params, float)
    estimate = float(form.func(np.array([float(x)]), *params)[0])
    grad = _gradient(form, float(x), params)
    var = float(grad @ np.array(fit.cov, float) @ grad)
    if interval == "prediction":
        var += fit.sigma ** 2
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, fit.dof) * math.sqrt(max(var, 0.0))) if math.isfinite(var) else math.inf
    return estimate, estimate - half, estimate + half


def predict(group: GroupFit, n: int, *, form: Optional[str] = None, fraction: Optional[float] = None,
            interval: str = "prediction") -> Optional[Prediction]:
    """Predicted drop at N with a 95% band; None when the group has no fit.

    Uses ``form`` if given, else the best form. A fraction form with unknown f at this N falls
    back to the best N-based candidate (see the module docstring).
    """
    if not group.fitted:
        return None
    pool = [c for c in group.candidates if form is None or c.form == form]
    if not pool:
        raise ValueError(f"form {form!r} was not fitted for this group")
    chosen, note = pool[0], ""
    f = fraction if fraction is not None else fraction_at(group.fractions, n)
    if chosen.variable == "fraction" and f is None:
        fallback = [c for c in group.candidates if c.variable == "n"]
        if not fallback:
            return None
        note = f"param fraction unknown at N={n}; used {fallback[0].form} instead of fraction form"
        chosen = fallback[0]
    x = f if chosen.variable == "fraction" else n
    estimate, low, high = predict_form(chosen, x, interval)
    return Prediction(n=int(n), form=chosen.form, drop_pp=estimate, lower95=low, upper95=high,
                      interval=interval, fraction=f, note=note)


def curve(group: GroupFit, ns: Sequence[float], interval: str = "confidence") -> tuple:
    """(n, estimate, lower, upper) arrays of the best form over ``ns`` (for plots); skips unknown f."""
    out, best = [], group.best
    for n in ns if best is not None else ():
        x = fraction_at(group.fractions, n) if best.variable == "fraction" else n
        if x is not None:
            out.append((n, *predict_form(best, x, interval)))
    arr = np.array(out, float).reshape(-1, 4)
    return arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]


def size_check(records: Iterable[dict], tolerance: float = 0.01) -> tuple:
    """Max |predicted_weight_bytes - weight_bytes| / weight_bytes per group."""
    out = []
    for key, group in group_records(records).items():
        errors = []
        for r in group:
            measured, predicted = as_number(r.get("weight_bytes")), as_number(r.get("predicted_weight_bytes"))
            if measured and predicted is not None:
                errors.append((abs(predicted - measured) / measured, r.get("case_id")))
        worst = max(errors, key=lambda e: e[0]) if errors else (None, None)
        out.append(SizeCheck(*key, n_records=len(errors), max_rel_error=worst[0], worst_case_id=worst[1],
                             tolerance=tolerance, ok=worst[0] is None or worst[0] <= tolerance))
    return tuple(out)
