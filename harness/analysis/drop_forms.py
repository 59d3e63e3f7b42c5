"""Candidate accuracy-drop formulas and the weighted least-squares fit of one of them. Pure.

Works on arrays (x = N or param fraction, y = drops, optional weights); ``harness.analysis.drop_fit`` turns
records into those arrays, picks the best form per group and documents the prediction band.

Forms: linear a*N (N = 0 quantizes nothing), affine a + b*N, fraction a*f (f = param_fraction,
the quantized share of weights), power a*N^b, saturating a*(1 - exp(-b*N)); and the flat ones, zero
(drop = 0) and constant (drop = c at every fitted N), the null models a trend must beat
(``harness.analysis.drop_trend``). Forms linear in their
parameters are solved in closed form; the others by ``curve_fit`` from a profile-likelihood start
(a is linear given b; b scanned on a log grid), which leave-one-N-out refits use directly.
Parameter intervals are 95% Wald intervals, estimate +- t(0.975, m-k) * sqrt(diag(cov)), with
cov = s^2 (J'WJ)^-1. A parameter on its bound is reported in ``FormFit.at_bound``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from scipy import optimize, stats

from harness.results import seedstats

CONFIDENCE = 0.95


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
    design: Optional[Callable] = None  # x -> design matrix, for forms linear in their parameters


TREND_FORMS = (
    Form("linear", "n", ("a",), lambda x, a: a * x, "drop_pp ≈ {} × N", design=lambda x: x[:, None]),
    Form("affine", "n", ("a", "b"), lambda x, a, b: a + b * x, "drop_pp ≈ {} + {} × N",
         design=lambda x: np.column_stack([np.ones_like(x), x])),
    Form("fraction", "fraction", ("a",), lambda x, a: a * x, "drop_pp ≈ {} × f  (f = quantized param fraction)",
         design=lambda x: x[:, None]),
    Form("power", "n", ("a", "b"), lambda x, a, b: a * np.power(x, b), "drop_pp ≈ {} × N^{}",
         ((-np.inf, 1e-3), (np.inf, POWER_MAX_EXPONENT))),
    Form("saturating", "n", ("a", "b"), lambda x, a, b: -a * np.expm1(-b * x), "drop_pp ≈ {} × (1 − e^(−{} × N))",
         ((-np.inf, 1e-4), (np.inf, 50.0))),
)
# Without these a flat group had to be described by some line: "best of 5" picked between two lines
# through the origin for data whose seed means did not move with N (issue 31).
FLAT_FORMS = (
    Form("zero", "n", (), lambda x: np.zeros_like(np.asarray(x, float)), "drop_pp ≈ 0",
         design=lambda x: np.zeros((len(x), 0))),
    Form("constant", "n", ("c",), lambda x, c: c + np.zeros_like(np.asarray(x, float)), "drop_pp ≈ {} at every N",
         design=lambda x: np.ones((len(x), 1))),
)
FLAT = tuple(form.name for form in FLAT_FORMS)
FORMS = TREND_FORMS + FLAT_FORMS
FORMS_BY_NAME = {form.name: form for form in FORMS}
# The parameter whose sign says "the drop moves with N": its seed-level interval must exclude 0.
TREND_PARAM = {"linear": "a", "affine": "b", "fraction": "a", "power": "a", "saturating": "a"}


@dataclass(frozen=True)
class FormFit:
    form: str
    variable: str
    param_names: tuple
    params: tuple
    ci_low: tuple
    ci_high: tuple
    cov: tuple  # k x k, as nested tuples
    sigma: float  # residual SD per unit weight, sqrt(weighted RSS / (m - k))
    dof: int
    n_points: int  # points fitted (N means in fit_group)
    rss: float
    r2: float
    aic: float
    aicc: float  # inf when undefined (too few points)
    loo_rmse: float  # leave-one-N-out RMSE; nan when no fold could be fitted
    formula: str
    at_bound: str = ""  # e.g. "b = 3 at its upper bound 3"; "" when every parameter is inside
    seed_response: tuple = ()  # per seed: d params / d (that seed's shift), for the seed-shift variance
    # Seed-level 95% intervals (drop_trend.seed_level): per-seed fits, t over seeds, so they hold the
    # shift a seed shares across all N; () with fewer than 2 seeds. ci_low/ci_high above are Wald
    # intervals on the N means, which treat that shared shift as independent noise.
    seed_low: tuple = ()
    seed_high: tuple = ()
    seed_count: int = 0
    loso_rmse: float = math.nan  # leave-one-seed-out RMSE of one run's drops at N > 0 (drop_trend)


def _weighted_lstsq(form: Form, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    root = np.sqrt(w)
    return np.linalg.lstsq(form.design(x) * root[:, None], y * root, rcond=None)[0]


def _profile_start(form: Form, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> list:
    """[a, b] for a*g(x, b) forms: a is linear given b, so scan b on a log scale, then refine."""
    lo, hi = form.bounds[0][1], form.bounds[1][1]

    def rss_and_a(log_b):
        g = form.func(x, 1.0, math.exp(log_b))
        gg = float(np.dot(w * g, g))
        a = float(np.dot(w * g, y) / gg) if gg > 0 else 0.0
        return float(np.sum(w * (y - a * g) ** 2)), a

    grid = np.linspace(math.log(lo), math.log(hi), 41)
    best = min(grid, key=lambda v: rss_and_a(v)[0])
    step = grid[1] - grid[0]
    res = optimize.minimize_scalar(lambda v: rss_and_a(v)[0], bounds=(max(best - step, grid[0]), min(best + step, grid[-1])),
                                   method="bounded", options={"xatol": 1e-6})
    log_b = float(res.x) if res.fun <= rss_and_a(best)[0] else float(best)
    return [rss_and_a(log_b)[1], math.exp(log_b)]


def quick_params(form: Form, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Closed form or profile optimum: good enough for leave-one-out refits and per-seed fits."""
    return _weighted_lstsq(form, x, y, w) if form.design else np.array(_profile_start(form, x, y, w))


_quick_params = quick_params


def _solve(form: Form, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> Optional[np.ndarray]:
    """Least-squares parameters, or None. Bounded forms get few evaluations from the profile start;
    if the solver does not converge in time the start is kept."""
    if form.design is not None:
        return _weighted_lstsq(form, x, y, w)
    p0 = np.clip(_profile_start(form, x, y, w), np.array(form.bounds[0]) + 1e-12, np.array(form.bounds[1]) - 1e-12)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(form.func, x, y, p0=p0, sigma=1 / np.sqrt(w), bounds=form.bounds,
                                           max_nfev=50)
    except RuntimeError:
        params = p0
    except (ValueError, FloatingPointError, optimize.OptimizeWarning):
        return None
    return params if np.all(np.isfinite(params)) else None


def _information(rss: float, m: int, k: int, y: np.ndarray) -> tuple:
    rss = max(rss, 1e-12 * (1.0 + float(np.dot(y, y))))
    big_k = k + 1  # + noise variance
    aic = m * math.log(rss / m) + 2 * big_k
    aicc = aic + 2 * big_k * (big_k + 1) / (m - big_k - 1) if m - big_k - 1 > 0 else math.inf
    return aic, aicc


def _bound_note(form: Form, params: np.ndarray) -> str:
    if form.bounds == (-np.inf, np.inf):
        return ""
    notes = []
    for name, p, lo, hi in zip(form.params, params, form.bounds[0], form.bounds[1]):
        for side, bound in (("lower", lo), ("upper", hi)):
            if math.isfinite(bound) and abs(p - bound) <= 1e-3 * max(abs(bound), 1e-12):
                notes.append(f"{name} = {p:.3g} at its {side} bound {bound:g}")
    return "; ".join(notes)


def enough_points(m: int, k: int) -> bool:
    """A k-parameter form needs m > k + 1 points: at m = k the fit is exact, at k + 1 it has 1 dof."""
    return m > k + 1


def fit_form(form: Form, x: Sequence[float], y: Sequence[float], n_for_loo: Optional[Sequence] = None,
             loo: bool = True, weights: Optional[Sequence[float]] = None,
             seed_sets: Optional[Sequence] = None) -> Optional[FormFit]:
    """Fit one form to (x, y) with optional weights; None when it has too few points or fails.

    ``n_for_loo``: the N of each point (defaults to x) for the leave-one-N-out error.
    ``seed_sets``: the seeds averaged into each point, for the seed-shift response.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, float)
    m, k = len(y), len(form.params)
    if not enough_points(m, k):
        return None
    params = _solve(form, x, y, w)
    if params is None:
        return None
    jac = np.array([_gradient(form, xi, params) for xi in x]).reshape(m, k)
    a_inv = np.linalg.pinv(jac.T @ (w[:, None] * jac))
    rss = float(np.sum(w * (y - form.func(x, *params)) ** 2))
    dof = m - k
    cov = a_inv * rss / dof
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, dof) * np.sqrt(np.clip(np.diag(cov), 0, None))
    mean = float(np.sum(w * y) / np.sum(w))
    tss = float(np.sum(w * (y - mean) ** 2))
    aic, aicc = _information(rss, m, k, y)
    loo_rmse = _loo_rmse(form, x, y, w, np.asarray(n_for_loo if n_for_loo is not None else x, float)) if loo else math.nan
    return FormFit(
        form=form.name, variable=form.variable, param_names=form.params,
        params=tuple(float(p) for p in params),
        ci_low=tuple(float(v) for v in params - half), ci_high=tuple(float(v) for v in params + half),
        cov=tuple(tuple(float(v) for v in row) for row in cov),
        sigma=math.sqrt(rss / dof), dof=dof, n_points=m, rss=rss,
        r2=1.0 - rss / tss if tss > 0 else math.nan, aic=aic, aicc=aicc,
        loo_rmse=loo_rmse, formula=_format(form, params), at_bound=_bound_note(form, params),
        seed_response=_seed_response(a_inv, jac, w, seed_sets),
    )


def _seed_response(a_inv: np.ndarray, jac: np.ndarray, w: np.ndarray, seed_sets) -> tuple:
    """Per seed s: A^-1 sum_j J_j w_j [s in j] / |seeds_j|, the parameter shift per unit shift of s."""
    if not seed_sets:
        return ()
    seeds = sorted({s for group in seed_sets for s in group}, key=str)
    out = []
    for seed in seeds:
        share = np.array([w_j / len(g) if seed in g else 0.0 for w_j, g in zip(w, seed_sets)])
        out.append(tuple(float(v) for v in a_inv @ (jac.T @ share)))
    return tuple(out)


def _format(form: Form, params: Sequence[float]) -> str:
    return form.template.format(*(f"{p:.3g}" for p in params))


def _loo_rmse(form: Form, x: np.ndarray, y: np.ndarray, w: np.ndarray, ns: np.ndarray) -> float:
    """Hold out every point of one N at a time, refit, predict them; RMSE over all held-out points."""
    errors = []
    for held in np.unique(ns):
        train = ns != held
        if len(np.unique(ns[train])) < 2 or train.sum() <= len(form.params):
            continue
        params = _quick_params(form, x[train], y[train], w[train])
        errors.extend(y[~train] - form.func(x[~train], *params))
    return math.sqrt(float(np.mean(np.square(errors)))) if errors else math.nan


def _gradient(form: Form, x: float, params: np.ndarray) -> np.ndarray:
    """d f(x; p) / dp: exact for design forms, central differences otherwise."""
    if form.design is not None:
        return form.design(np.array([float(x)]))[0].astype(float)
    params = np.asarray(params, float)
    steps = 1e-6 * np.maximum(np.abs(params), 1.0)
    value = lambda p: form.func(np.array([float(x)]), *p)[0]  # noqa: E731
    return np.array([(value(params + e) - value(params - e)) / (2 * h) for e, h in zip(np.diag(steps), steps)])


def _variance_parts(fit: FormFit, x: float, interval: str, noise, sampling_var: float) -> tuple:
    """(((name, variance pp²), ...), [(variance, dof), ...] independent pieces for the dof)."""
    form = FORMS_BY_NAME[fit.form]
    grad = _gradient(form, float(x), np.array(fit.params, float))
    curve = float(grad @ np.array(fit.cov, float).reshape(grad.size, grad.size) @ grad)  # zero form: 0 x 0
    parts, terms = [("curve", curve)], [(curve, fit.dof)]
    gain = float(sum((grad @ np.array(v)) ** 2 for v in fit.seed_response)) if noise is not None else 0.0
    if noise is not None and noise.seed_shift > 0 and gain > 0:
        parts.append(("seed shift", gain * noise.seed_shift))
    run = interval == "prediction"
    if run:
        within, dof = (noise.within, noise.within_dof) if noise is not None else (fit.sigma ** 2, fit.dof)
        if within < sampling_var:  # floor: the shared pieces stay, the run term becomes the binomial one
            parts.append(("run (binomial floor)", sampling_var))
            terms.append((sampling_var, math.inf))
            run = False
        else:
            parts.append(("run", within))
            terms += [] if noise is not None else [(within, dof)]
    if noise is not None:
        terms += noise.terms(gain, run)
    return tuple(parts), terms


def predict_form(fit: FormFit, x: float, interval: str = "prediction", noise: Optional[seedstats.Noise] = None,
                 sampling_var: float = 0.0) -> tuple:
    """(estimate, lower95, upper95, dof, parts) of one fitted form at x (N, or f for the fraction form)."""
    if interval not in ("prediction", "confidence"):
        raise ValueError(f"interval must be 'prediction' or 'confidence', got {interval!r}")
    estimate = float(FORMS_BY_NAME[fit.form].func(np.array([float(x)]), *fit.params)[0])
    parts, terms = _variance_parts(fit, x, interval, noise, sampling_var)
    var = sum(v for _, v in parts)
    dof = seedstats.satterthwaite(terms)
    if not math.isfinite(var):
        return estimate, -math.inf, math.inf, dof, parts
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, dof) * math.sqrt(max(var, 0.0)))
    return estimate, estimate - half, estimate + half, dof, parts
