"""Measure one case, on the path its strategy asks for: in this process (default), with a
tf.distribute strategy in this process (mirrored), or on one process per worker (multiworker).
The one entry point of a measurement; pytest-free. Returns the record's measured fields."""

from __future__ import annotations


def measure(case, spec, env) -> dict:
    if case.strategy == "default":
        from harness.case import pipeline

        return pipeline.measure_here(case, spec, env)
    from harness.distributed import strategy

    return strategy.run(case, spec, env)
