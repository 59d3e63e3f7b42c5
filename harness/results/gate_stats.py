"""The regression gate's statistics, per model: each configuration against its own noise, and the shift the
whole model shares. Pure (numpy/scipy).

A configuration (a key: a case without its seed) has one drop per seed in the baseline and one per seed in
the run. Seeds are the unit of replication; the two runs are treated as independent samples of each
configuration (a code or machine change re-draws training, so seed s of the run need not resemble seed s
of the baseline; when it does, the test is conservative, never anti-conservative).

- **Model shift**: per seed, the mean drop over the model's configurations (N > 0, measured in every
  common seed); the shift is the run's mean of these minus the baseline's, tested one-sided (two-sample t,
  variance of the per-seed means pooled over both runs) against an allowance: 0 on the baseline's
  machine, the measured cross-machine spread on another (harness/results/machines.py).
- **Configuration contrast**: per seed, a configuration's drop minus the mean of its peers in that seed
  (the other configurations of its group, model x width x method; the model's other configurations when
  it is alone in its group). That removes the shift a seed gives every configuration alike (the float
  control is shared by every N, width and method of a seed), keeps a noisy group's spread out of a quiet
  group's contrast, and leaving the configuration itself out makes "one configuration 2 pp worse" a
  contrast of 2 pp at any number of configurations. The contrast's
  variance is the configuration's own, pooled over the seeds of both runs, with a prior from its group
  (model x bit width x method: the configurations most like it): s² = (ss + d0·s0²) / (df + d0), t with
  df + d0 degrees of freedom (the conjugate-prior form of Smyth's moderated t). s0² is the pooled variance
  of the group's *other* configurations, so a noisy configuration's own spread is not averaged in twice;
  d0 = PRIOR_DF (capped by the df those others have) weighs the group like one 3-vs-3 configuration's own
  evidence: it steadies a 3-seed estimate and fades as seeds are added. PTQ and QAT, or quiet and noisy
  groups, never share a variance.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy import stats

# The group prior's weight in degrees of freedom: one configuration's own df at 3 vs 3 seeds (2 + 2).
# The resampling simulations (harness/analysis/gate_power.py) keep <= 5% false failures with it.
PRIOR_DF = 4


_CONTROL = re.compile(r"-(last|first|sens)0-")


def method_of(key: str) -> str:
    """A configuration's method from its key: PTQ cases end in '-ptq' (QuantConfig.tag in harness/design)."""
    return "ptq" if key.endswith("-ptq") else "qat"


def is_control(key: str, n) -> bool:
    """The quantized model is the float control (drop 0 by construction): N = 0 of last, first or
    sensitivity. A 'single0' case quantizes unit 0, and 'type' cases keep n = 0: both are measured."""
    return n == 0 and bool(_CONTROL.search(key))


def prior_group(model, weight_bits, key: str) -> str:
    return f"{model}/w{weight_bits}/{method_of(key)}"


@dataclass(frozen=True)
class ModelTests:
    """One model's tests over the seeds both runs measured for all its N > 0 configurations."""

    keys: tuple
    seeds: tuple
    old: dict  # key -> baseline mean drop over the seeds
    new: dict  # key -> run mean drop
    diff: dict  # key -> rise (run - baseline)
    contrast: dict = field(default_factory=dict)  # key -> rise minus the others' mean rise
    contrast_sd: dict = field(default_factory=dict)  # key -> SD of one seed's contrast (shrunk)
    contrast_df: dict = field(default_factory=dict)
    key_p: dict = field(default_factory=dict)  # key -> one-sided p of the contrast
    shift: float = 0.0  # mean rise over the configurations
    shift_se: Optional[float] = None
    shift_df: int = 0
    seed_sd: Optional[float] = None  # SD of one seed's model-mean drop

    def shift_p(self, allowance: float = 0.0) -> Optional[float]:
        """One-sided p of "the shift exceeds ``allowance``"; None without a noise estimate."""
        if self.shift_se is None:
            return None
        return one_sided(self.shift - allowance, self.shift_se, self.shift_df)


def one_sided(effect: float, se: float, df: float) -> float:
    if se > 0:
        return float(stats.t.sf(effect / se, df))
    return 0.0 if effect > 0 else 1.0


def _ss(x: np.ndarray) -> tuple:
    """(sum of squares about each row's mean, df) of a rows x seeds table."""
    if x.shape[1] < 2:
        return np.zeros(x.shape[0]), 0
    return np.sum((x - x.mean(axis=1, keepdims=True)) ** 2, axis=1), x.shape[1] - 1


def _peers_mean(x: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """Per row and seed, the mean of its peers: the other rows of its group, else every other row (a
    group of one). Peers of the same group keep a noisy group's spread (PTQ, say) out of a quiet one's
    contrast; the seed shift they remove is the model's, shared by all. Needs at least two rows."""
    groups = np.asarray(groups)
    out = np.empty_like(x)
    for i, group in enumerate(groups):
        peers = (groups == group) if int(np.sum(groups == group)) > 1 else np.ones(len(groups), bool)
        peers[i] = False
        out[i] = x[peers].mean(axis=0)
    return out


def _shrunk(ss: np.ndarray, df: int, groups: Sequence[str]) -> tuple:
    """(variance, df) per row: its own ss/df with the pooled variance of its group's other rows as prior."""
    groups = np.asarray(groups)
    var, dfs = np.full(len(ss), np.nan), np.zeros(len(ss))
    for i, group in enumerate(groups):
        others = (groups == group) & (np.arange(len(ss)) != i)
        other_df = df * int(others.sum())
        d0 = min(PRIOR_DF, other_df)
        prior = float(ss[others].sum()) / other_df if other_df else 0.0
        if df + d0 > 0:
            var[i], dfs[i] = (ss[i] + d0 * prior) / (df + d0), df + d0
    return var, dfs


def model_tests(old: np.ndarray, new: np.ndarray, keys: Sequence[str], groups: Sequence[str],
                seeds: tuple = ()) -> ModelTests:
    """``old``/``new``: configurations x seeds drops (pp) of one model; ``groups``: each row's prior group."""
    keys = tuple(keys)
    n_old, n_new = old.shape[1], new.shape[1]
    diff = new.mean(axis=1) - old.mean(axis=1)
    out = dict(keys=keys, seeds=tuple(seeds), old=dict(zip(keys, old.mean(axis=1))),
               new=dict(zip(keys, new.mean(axis=1))), diff=dict(zip(keys, diff)), shift=float(diff.mean()))
    scale = math.sqrt(1 / n_old + 1 / n_new)
    (ss_o,), df_o = _ss(old.mean(axis=0, keepdims=True))
    (ss_n,), df_n = _ss(new.mean(axis=0, keepdims=True))
    if df_o + df_n:
        sd = math.sqrt((ss_o + ss_n) / (df_o + df_n))
        out.update(shift_se=sd * scale, shift_df=df_o + df_n, seed_sd=sd)
    if len(keys) > 1:
        c_old, c_new = old - _peers_mean(old, groups), new - _peers_mean(new, groups)
        (ss_a, df_a), (ss_b, df_b) = _ss(c_old), _ss(c_new)
        var, dfs = _shrunk(ss_a + ss_b, df_a + df_b, groups)
        contrast = c_new.mean(axis=1) - c_old.mean(axis=1)
        out["contrast"] = dict(zip(keys, contrast))
        out.update(contrast_sd={k: math.sqrt(v) for k, v, d in zip(keys, var, dfs) if d > 0},
                   contrast_df={k: int(d) for k, d in zip(keys, dfs) if d > 0})
        out["key_p"] = {k: one_sided(c, out["contrast_sd"][k] * scale, out["contrast_df"][k])
                        for k, c in out["contrast"].items() if k in out["contrast_df"]}
    return ModelTests(**out)


def power(effect: float, sd: Optional[float], df: float, n_old: int, n_new: int, level: float) -> Optional[float]:
    """Power of the one-sided t-test at ``level`` for a true ``effect`` (noncentral t), given the SD of one
    seed's value and the test's df; None without a noise estimate."""
    if sd is None or not df:
        return None
    if sd == 0:
        return 1.0 if effect > 0 else 0.0
    nc = effect / (sd * math.sqrt(1 / n_old + 1 / n_new))
    return float(stats.nct.sf(stats.t.ppf(1 - level, df), df, nc))
