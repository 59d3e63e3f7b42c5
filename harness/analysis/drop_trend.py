"""Does the drop move with N at all? Seed-level intervals, held-out error of one run, and the verdict
"no trend detectable". Pure (numpy/scipy).

Seeds are the unit of replication (``harness.results.seedstats``): every drop of one seed shares its
float control, so a seed shifts all its N together, and a form through the origin turns that shift
into a slope. Intervals and held-out errors are therefore computed over seeds:

- ``seed_level``: the form fitted to each seed's own drops (one value per N); each parameter's 95%
  interval is the pooled estimate +- t(k-1) * SD over the k per-seed estimates / sqrt(k). For a
  form linear in its parameters with every seed at every N, the pooled estimate is the mean of the
  per-seed ones, and this is the t interval over seeds. An interval is clipped at the form's bounds
  (a rate below its floor means nothing).
- ``loso_rmse``: leave one seed out, fit the N means of the others, predict the left-out seed's drops
  at every fitted N: the error one user's single run makes against the line. Points at N = 0 are not
  fitted when they are 0 by construction (``drop_fit``), so they never flatter this error.
- ``decide``: a trend is reported only when the best trend form beats the best flat form (zero or
  constant) by AICc (AIC where some AICc is undefined, ``criterion``) AND by leave-one-seed-out error, AND its trend parameter's seed-level interval
  excludes 0. Otherwise the group is "no trend detectable", reported with its seed-level mean drop.
  Simulated with known truth in tests/test_simulation.py (flat data, a real slope, shared seed shifts).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, Optional

import numpy as np
from scipy import stats

from harness.analysis.drop_forms import CONFIDENCE, FORMS_BY_NAME, TREND_PARAM, FormFit, quick_params
from harness.results import seedstats

NO_TREND = "no trend detectable"


def seed_table(cells: dict, keep) -> dict:
    """{seed: (ns, drops)} of the (n, seed) cell means whose n is in ``keep``, sorted by n."""
    out: dict = {}
    for (n, seed), value in sorted(cells.items(), key=lambda kv: (str(kv[0][1]), kv[0][0])):
        if n in keep:
            ns, drops = out.setdefault(seed, ([], []))
            ns.append(float(n))
            drops.append(float(value))
    return {seed: (np.array(ns), np.array(drops)) for seed, (ns, drops) in out.items()}


def _params_of(form_name: str, ns: np.ndarray, ys: np.ndarray, w: np.ndarray, x_of: Callable) -> Optional[np.ndarray]:
    """Least-squares parameters on these points, or None (unknown x, or fewer distinct N than parameters)."""
    form = FORMS_BY_NAME[form_name]
    x = x_of(form, ns)
    if np.isnan(x).any() or len(np.unique(ns)) < max(len(form.params), 1):
        return None
    with np.errstate(all="ignore"):
        params = quick_params(form, x, ys, w)
    return params if np.all(np.isfinite(params)) else None


def _clip(form_name: str, low: np.ndarray, high: np.ndarray) -> tuple:
    bounds = FORMS_BY_NAME[form_name].bounds
    if bounds == (-np.inf, np.inf):
        return low, high
    return np.maximum(low, bounds[0]), np.minimum(high, bounds[1])


def seed_level(fit: FormFit, table: dict, x_of: Callable) -> FormFit:
    """``fit`` with its seed-level intervals and leave-one-seed-out error (see the module docstring)."""
    per_seed = [p for ns, ys in table.values()
                if (p := _params_of(fit.form, ns, ys, np.ones_like(ys), x_of)) is not None]
    low = high = ()
    if len(per_seed) >= 2 and fit.params:
        spread = np.std(np.array(per_seed), axis=0, ddof=1)
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(per_seed) - 1) * spread / math.sqrt(len(per_seed))
        centre = np.array(fit.params)
        clipped = _clip(fit.form, centre - half, centre + half)
        low, high = tuple(float(v) for v in clipped[0]), tuple(float(v) for v in clipped[1])
    return replace(fit, seed_low=low, seed_high=high, seed_count=len(per_seed),
                   loso_rmse=loso_rmse(fit.form, table, x_of))


def loso_rmse(form_name: str, table: dict, x_of: Callable) -> float:
    """RMS error of each seed's drops against the form fitted to the other seeds' N means; nan with
    fewer than 2 seeds."""
    if len(table) < 2:
        return math.nan
    form, errors = FORMS_BY_NAME[form_name], []
    for held, (ns_held, ys_held) in table.items():
        rest = [v for s, v in table.items() if s != held]
        ns = np.concatenate([n for n, _ in rest])
        ys = np.concatenate([y for _, y in rest])
        grid = np.unique(ns)
        means = np.array([ys[ns == n].mean() for n in grid])
        counts = np.array([float(np.sum(ns == n)) for n in grid])
        params = _params_of(form_name, grid, means, counts, x_of)
        if params is None:
            continue
        errors.extend(ys_held - form.func(x_of(form, ns_held), *params))
    return math.sqrt(float(np.mean(np.square(errors)))) if errors else math.nan


def level(table: dict) -> tuple:
    """(mean, low, high, seeds): per seed the mean drop over its fitted N, then the t interval over seeds."""
    per_seed = [float(np.mean(ys)) for _, ys in table.values() if len(ys)]
    return (*seedstats.mean_interval(per_seed), len(per_seed))


def trend_interval(fit: FormFit) -> Optional[tuple]:
    """(name, estimate, low, high) of the form's trend parameter at seed level; None without one."""
    name = TREND_PARAM.get(fit.form)
    if name is None or not fit.seed_low:
        return None
    i = fit.param_names.index(name)
    return name, fit.params[i], fit.seed_low[i], fit.seed_high[i]


def criterion(fits) -> tuple:
    """("AICc", score) when every fit has a defined AICc, else ("AIC", score): with m = k + 2 points a
    one-parameter form's AICc is undefined while the zero form's is not, and comparing a finite
    number with infinity would pick the form with fewer parameters whatever the data say."""
    if all(math.isfinite(f.aicc) for f in fits):
        return "AICc", lambda f: f.aicc
    return "AIC", lambda f: f.aic


def decide(trend: Optional[FormFit], flat: FormFit) -> tuple:
    """(detected, reason): does ``trend`` beat the flat model (see the module docstring)?"""
    if trend is None:
        return False, f"{NO_TREND}: no trend form could be fitted"
    why = []
    name, score = criterion((trend, flat))
    if not score(trend) < score(flat):
        why.append(f"{name} {score(trend):.3g} does not beat {flat.form}'s {score(flat):.3g}")
    if not (trend.loso_rmse < flat.loso_rmse):  # nan (one seed) fails too
        why.append(f"leave-one-seed-out RMSE {trend.loso_rmse:.3g} pp does not beat {flat.form}'s "
                   f"{flat.loso_rmse:.3g}" if math.isfinite(trend.loso_rmse) else
                   "no leave-one-seed-out error (fewer than 2 seeds)")
    slope = trend_interval(trend)
    if slope is None:
        why.append(f"no seed-level interval for its trend ({trend.seed_count} seed(s) with a fit)")
    elif slope[2] <= 0 <= slope[3]:
        why.append(f"{slope[0]}'s seed-level interval [{slope[2]:.3g}, {slope[3]:.3g}] contains 0")
    if why:
        return False, f"{NO_TREND}: {trend.form} " + "; ".join(why)
    return True, (f"{trend.form} beats {flat.form} by {name} ({score(trend):.3g} < {score(flat):.3g}) and by "
                  f"leave-one-seed-out RMSE ({trend.loso_rmse:.3g} < {flat.loso_rmse:.3g} pp); {slope[0]}'s "
                  f"seed-level interval excludes 0")


def bound_reading(fit: FormFit) -> str:
    """A fit with a parameter on its bound, read as the bound it is, never as a formula with an
    interval; "" when no parameter is at a bound."""
    if not fit.at_bound:
        return ""
    a, b = fit.params[0], fit.params[1] if len(fit.params) > 1 else math.nan
    upper = "upper bound" in fit.at_bound
    if fit.form == "saturating":
        return (f"a step: ≈ {a:.3g} pp at every N ≥ 1 (the rate sits at its cap {b:g}: no dependence on N "
                f"is left to estimate)" if upper else
                f"a line: ≈ {a * b:.3g} × N (the rate sits at its floor {b:g}: the curve never bends)")
    if fit.form == "power":
        return (f"rises at least as fast as N^{b:g} (the exponent sits at its cap; ≈ {a:.3g} × N^{b:g} is a "
                f"lower bound on the steepness, not a formula)" if upper else
                f"a step: ≈ {a:.3g} pp at every N ≥ 1 (the exponent sits at its floor {b:g})")
    return fit.at_bound
