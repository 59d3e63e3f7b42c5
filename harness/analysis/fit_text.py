"""The report's words for the drop fits and the per-model verdict. Pure (no TF, no plotting).

A group is described as a trend (its formula, with seed-level intervals and the leave-one-seed-out
error of one run) only when ``drop_trend.decide`` found one; otherwise as "no trend detectable" with
its seed-level mean drop and the reasons the best trend form was not established. A form with a
parameter on its bound is written as the bound it is (``drop_trend.bound_reading``), never as a
formula with an interval.
"""

from __future__ import annotations

import math
from typing import Optional

from harness.analysis import drop_fit as _fit
from harness.analysis import drop_trend
from harness.analysis import order_test as _compare


def _num(value, spec: str = ".3g") -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


def noise_text(gfit: _fit.GroupFit) -> str:
    if gfit.noise is None:
        return f"{gfit.seeds} seed(s), no N with two seeds: seed-to-seed spread not estimated"
    text = f"{gfit.seeds} seeds, run-to-run SD {gfit.noise.within ** 0.5:.3g} pp (~{gfit.noise.within_dof:.0f} dof)"
    return text + (f", of which a shift shared by all N of a seed SD {gfit.noise.seed_shift ** 0.5:.3g} pp"
                   if gfit.noise.seed_shift > 0 else "")


def params_text(fit) -> str:
    """"a = 0.1 [0.02, 0.2]" with seed-level intervals; the estimate alone where there is none."""
    if not fit.seed_low:
        return ", ".join(f"{n} = {p:.3g}" for n, p in zip(fit.param_names, fit.params)) + \
            f" (no seed-level interval: {fit.seed_count} seed(s) with a fit)"
    return ", ".join(f"{n} = {p:.3g} [{lo:.3g}, {hi:.3g}]"
                     for n, p, lo, hi in zip(fit.param_names, fit.params, fit.seed_low, fit.seed_high))


def level_text(gfit: _fit.GroupFit) -> str:
    mean, low, high, seeds = gfit.level
    interval = "" if math.isnan(low) else f" [{low:+.3g}, {high:+.3g}]"
    return f"mean drop {mean:+.3g}{interval} pp (seed-level 95% t, {seeds} seed(s))"


def form_text(fit) -> str:
    """The formula, or the bound reading of a fit at a bound."""
    return drop_trend.bound_reading(fit) or f"`{fit.formula}`"


def _where(gfit: _fit.GroupFit) -> str:
    zero = "; N = 0 not fitted: 0 by construction" if gfit.zero_by_construction else ""
    return f"fitted to the seed means at N = {list(gfit.n_values)}{zero} ({gfit.n_points} runs; {noise_text(gfit)})"


def _main_line(head: str, gfit: _fit.GroupFit) -> str:
    b = gfit.best
    if not gfit.trend:
        return f"{head}: **{drop_trend.NO_TREND}** — {level_text(gfit)}; {_where(gfit)}"
    if b.at_bound:
        return (f"{head}: {form_text(b)} — at a bound, read as a bound (no interval); leave-one-seed-out RMSE "
                f"{_num(b.loso_rmse)} pp; {_where(gfit)}")
    return (f"{head}: `{b.formula}` — seed-level 95% CI {params_text(b)}; R² = {_num(b.r2, '.3f')}, "
            f"leave-one-seed-out RMSE = {_num(b.loso_rmse)} pp (one run against the fit to the other seeds, "
            f"N > 0); {_where(gfit)}")


def fit_lines(gfit: _fit.GroupFit) -> list:
    head = f"- **{gfit.order} · w{gfit.weight_bits} · {gfit.method}**"
    if not gfit.fitted:
        return [f"{head}: no fit — {gfit.reason}"]
    criterion = "AICc" if gfit.selection == "aicc" else "residual"
    # the best trend form is the main line (a trend) or its own line (not established): list the rest
    others = ", ".join(f"{c.form} {c.aicc if gfit.selection == 'aicc' else c.rss:.3g}"
                       + (" (at bound)" if c.at_bound else "") for c in gfit.candidates[1:])
    flats = ", ".join(f"{c.form} AICc {c.aicc:.3g}, leave-one-seed-out {_num(c.loso_rmse)} pp" for c in gfit.flat)
    lines = [_main_line(head, gfit), f"  - {gfit.reason}; others ({criterion}): {others or 'none'}; flat: {flats}"]
    best = gfit.trend_best
    if best is not None and not gfit.trend:
        lines.append(f"  - best trend form {form_text(best)} (seed-level {params_text(best)}; leave-one-seed-out "
                     f"{_num(best.loso_rmse)} pp) not established: {gfit.trend_reason.split(': ', 1)[-1]}")
    elif gfit.trend:
        lines.append(f"  - trend: {gfit.trend_reason}")
    lines += [f"  - not fitted: {'; '.join(gfit.skipped)}"] if gfit.skipped else []
    if best is not None and best.at_bound:
        lines.append(f"  - **at bound**: {best.at_bound} — the form is capped there; read it as a bound, not a trend")
    return lines


def short(gfit: _fit.GroupFit) -> str:
    """A few words for a verdict or the terminal: the formula (or bound), or no trend with its level."""
    if not gfit.fitted:
        return gfit.reason
    if not gfit.trend:
        return f"{drop_trend.NO_TREND} ({level_text(gfit)})"
    return f"{form_text(gfit.best)} (leave-one-seed-out RMSE {_num(gfit.best.loso_rmse)} pp)"


def model_verdict(model: str, comparisons, fits, readings: Optional[dict] = None) -> str:
    """One sentence per model: does quantizing the last N cost less than the first N, per bit width and
    method, by the declared test of the pre-registered family (harness/design/family.py), then the
    last-N drop: its trend, or "no trend detectable"."""
    tests = [(c, c.test) for c in comparisons if c.model == model and c.primary and not c.inner]
    inner = [(c, c.test) for c in comparisons if c.model == model and c.primary and c.inner]
    if not tests and not inner:
        return ""
    last = [f for f in fits if f.model == model and f.order == "last" and f.fitted and f.method == "qat"]
    drops = [f"W{f.weight_bits} {short(f)}" for f in last]
    tail = ("; drop of the last N: " + ", ".join(drops)) if drops else "; no drop formula could be fitted"
    text = f"**{model}**: " + (_order_clause(tests, "", readings or {}) + tail + "." if tests else "")
    if inner:
        text += (" " if tests else "") + "With the first and last unit held out of both: " + _order_clause(inner, " inner units") + "."
    return text


def _order_clause(tests, units: str, readings: Optional[dict] = None) -> str:
    """"quantizing the last N instead of the first N costs W8 QAT 0.10 pp less (...), ..." for one pair."""
    too_few = all(t.verdict == _compare.TOO_FEW for _, t in tests)
    parts = []
    for c, t in tests:
        way = "less" if t.mean_diff_pp >= 0 else "more"
        holm = f"Holm-adjusted {t.p_holm:.2g}" if t.counted else "not counted in Holm: cannot reach significance"
        verdict = "" if too_few else f": {t.verdict}"
        reading = (readings or {}).get((str(c.model), int(c.weight_bits or 0), str(c.method or "qat").lower()))
        verdict += f"; {reading}" if reading and verdict else ""
        parts.append(f"W{c.weight_bits} {c.method.upper()} {abs(t.mean_diff_pp):.2f} pp {way} "
                     f"({_compare.MATCHING_TEXT[t.matching]}, {t.n_seeds} seeds, sign-flip p = {t.p_value:.2g}, "
                     f"{holm}{verdict})")
    if too_few:
        lead = (f"too few pairs to tell whether the last N{units} cost less than the first N{units}; measured, the "
                f"last N{units} cost ")
    else:
        lead = f"quantizing the last N{units} instead of the first N{units} costs "
    return lead + ", ".join(parts)
