"""Train-step time of several compiled models, interleaved so that machine noise hits all of them alike.

Why not a few rounds of a few steps: on a small model a step takes 3 ms, so 5 steps are 15 ms of
measurement, less than one scheduler hiccup. The Intel Xeon run of Nov 27 showed two byte-identical
mlp models (per-tensor Dense, which the fake-quant patch never touches) at QAT/float medians of 1.34
and 1.02: noise, not a difference. Here every round lasts at least ``round_ms`` per model (steps are
scaled up for fast models, the same count for every model), the order of the models rotates from
round to round so that none always runs right after another, and the median ratio over rounds comes
with a distribution-free 95% interval (order statistics of the rounds). Timing is not asserted
anywhere; `python -m harness perf` prints it.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np

# the median's order-statistic interval lives with the pure statistics: per-case LiteRT latency uses it too
from harness.results.seedstats import CONFIDENCE, MIN_ROUNDS_FOR_INTERVAL, median_interval  # noqa: F401


def steps_per_round(step_s: float, min_steps: int, round_ms: float) -> int:
    """Steps each model runs per round: at least ``min_steps``, and enough for ``round_ms`` of the
    reference (float) step. Pure."""
    if step_s <= 0:
        return min_steps
    return max(min_steps, math.ceil(round_ms / 1000.0 / step_s))


def rotated(names: Sequence[str], round_index: int) -> list:
    """The models' order in one round: shifted by one each round. Pure."""
    shift = round_index % len(names)
    return list(names[shift:]) + list(names[:shift])


def summary(per_round: Sequence[float]) -> dict:
    """min / median / max over rounds, and the median's 95% interval (None when too few rounds)."""
    values = [float(v) for v in per_round]
    low, high = median_interval(values)
    return {"min": min(values), "median": float(np.median(values)), "max": max(values),
            "ci95": None if low is None else [low, high], "rounds": len(values)}


def _runner(model, data, batch_size: int):
    from harness.case import train

    iterator = iter(train._train_dataset(data, batch_size, seed=0))
    step = model.train_function or model.make_train_function()
    for _ in range(train.WARMUP_STEPS):
        float(step(iterator)["loss"])
    return step, iterator


def _timed_steps(runner, steps: int) -> list:
    step, iterator = runner
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        float(step(iterator)["loss"])  # wait for the step to finish
        times.append(time.perf_counter() - start)
    return times


def interleaved_step_ms(models: dict, data, batch_size: int, rounds: int, min_steps: int,
                        round_ms: float, reference: str = "float") -> dict:
    """Per-round median step ms of each compiled model, with rotating order and rounds of at least
    ``round_ms`` of the ``reference`` model. Weights are restored afterwards (optimizer slots are not).
    Returns {"steps": steps per round, "per_round_ms": {name: [ms per round]}}."""
    saved = {name: model.get_weights() for name, model in models.items()}
    runners = {name: _runner(model, data, batch_size) for name, model in models.items()}
    calibration = _timed_steps(runners[reference], max(3, min_steps))
    steps = steps_per_round(float(np.median(calibration)), min_steps, round_ms)
    samples = {name: [] for name in models}
    for index in range(rounds):
        for name in rotated(list(models), index):
            samples[name].append(float(np.median(_timed_steps(runners[name], steps))) * 1000.0)
    for name, model in models.items():
        model.set_weights(saved[name])
    return {"steps": steps, "per_round_ms": samples}


def ratios_to(per_round_ms: dict, reference: str = "float") -> dict:
    """Each model's per-round step time over the reference's in the same round, summarised. Pure."""
    return ratios_to_fastest(per_round_ms, (reference,))


def ratios_to_fastest(per_round_ms: dict, references: Sequence[str]) -> dict:
    """Each model's per-round step time over the fastest of ``references`` in the same round, summarised;
    the first reference is the base and gets no ratio, the others do (how far each is from the fastest). Pure."""
    fastest = [min(times) for times in zip(*(per_round_ms[name] for name in references))]
    return {name: summary([q / f for q, f in zip(times, fastest)])
            for name, times in per_round_ms.items() if name != references[0]}
