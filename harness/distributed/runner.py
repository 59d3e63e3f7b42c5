"""Picks the path a case runs on: this process (default strategy), a tf.distribute strategy in this
process (mirrored), or one process per worker (multiworker)."""

from __future__ import annotations


def run_case(case, spec, env) -> dict:
    if case.strategy == "default":
        from harness.case import pipeline

        return pipeline.run_case(case, spec, env)
    from harness.distributed import strategy

    return strategy.run(case, spec, env)
