"""qatbench's pytest options: one group, every option prefixed ``--qat-``, each value parsed and
validated by a type function in harness/options.py when pytest parses the command line. Light: imports
neither TensorFlow nor scipy, so a pytest run that collects no qatbench case pays nothing for it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from harness import options
from harness.design.config import RunOptions
from harness.external import register

GROUP = "qatbench"
# Options of the pytest layer alone (which items run, what the terminal shows): no case reads them,
# so they are not RunOptions fields.
PYTEST_LAYER = ("skip", "only", "progress")


def addoption(parser) -> None:
    group = parser.getgroup(GROUP, "qatbench: partial quantization-aware training benchmarks")
    for add_some in (_grid_options, _run_options, _gate_options, _pytest_layer_options, register.addoption):
        add_some(group.addoption)


def _grid_options(add) -> None:
    """Which cases: tier, bits, orders, budgets, methods, seeds."""
    add("--qat-tier", type=options.parse_tier, default="smoke",
        help="work per case: smoke (default, CI), full (all data, more steps, seeds, bits, orders) or "
             "reference (last vs first, 3 seeds: the research question)")
    add("--qat-bits", type=options.parse_bits, default=(),
        help="comma-separated weight bit widths 2..8 (default: the tier's, e.g. 8,4)")
    add("--qat-orders", type=options.parse_orders, default=(),
        help="comma-separated selection orders: last, first, single, type, sensitivity, mixed, last-inner, "
             "first-inner, ends8 (default: the tier's); mixed: float/INT8/INT4 per unit within a weight-bytes "
             "budget (--qat-mixed-budgets); last-inner/first-inner: last/first N with the first and last unit "
             "held out; ends8: first and last unit at W8, every other at W4 (one case per seed)")
    add("--qat-mixed-budgets", type=options.parse_mixed_budgets, default=(), metavar="BYTES,...",
        help="weight-bytes budgets of the mixed order's cases, e.g. 150000,300000 (default: the tier's); "
             "one case per budget and seed, id <model>-mixed-b150k")
    add("--qat-methods", type=options.parse_methods, default=(),
        help="comma-separated: qat (fine-tune with fake-quant) and/or ptq (selective post-training "
             "quantization of the fine-tuned float control; 8-bit only). Default: the tier's")
    add("--qat-seeds", type=options.parse_seeds, default=(),
        help="comma-separated seeds (default: the tier's)")


def _run_options(add) -> None:
    """How and where the cases run."""
    add("--qat-strategy", type=options.parse_strategy, default="default",
        help="tf.distribute strategy for fine-tuning: default, mirrored, multiworker")
    add("--qat-workers", type=options.parse_workers, default=1,
        help="number of devices (mirrored) or worker processes (multiworker); at most one per core (min 2); "
             "1 with the default strategy")
    add("--qat-threads", type=options.parse_threads, default=None,
        help="TensorFlow intra/inter-op threads per process, at most 4 per core "
             "(default: 1 under xdist, else TF's default)")
    add("--qat-results", type=options.parse_results_dir, default=Path("results"),
        help="folder for run folders (default: results/)")
    add("--qat-run-id", type=options.parse_run_id, default=None,
        help="name of this run's folder under --qat-results (default: a UTC timestamp); a folder that "
             "already holds records is refused: continue it with --qat-resume")
    add("--qat-cache", type=options.parse_cache_dir, default=None,
        help="folder of pre-trained float baselines (default: $QATBENCH_CACHE or .qatbench-cache)")
    add("--qat-timeout", type=options.parse_timeout, default=0.0,
        help="per-case time limit in seconds, 1..604800; a case past it is recorded with status timeout (0: none)")


def _gate_options(add) -> None:
    """What a run is checked against, and the planner's budgets."""
    add("--qat-baseline", type=options.parse_existing_file, default=None,
        help="baseline JSON to gate against, seed by seed: a configuration regresses when its mean drop over "
             "seeds rises beyond the measured noise and by at least the minimum effect, or its .tflite grows "
             "by more than 1%%; missing cases fail; entries with another config hash are reported stale")
    add("--qat-save-baseline", type=options.parse_output_file, default=None,
        help="write this run's per-seed drops, accuracies, bytes, config hashes and noise as a baseline JSON")
    add("--qat-drop-tolerance", type=options.parse_tolerance, default=None,
        help="minimum increase of the mean drop (pp) that counts as a regression against the baseline "
             "(default: each model spec's min_regression_pp)")
    add("--qat-budget", type=options.parse_budget, default=None,
        help="accuracy budget in pp: print the largest N whose predicted drop (upper 95%% bound) fits")
    add("--qat-size-budget", type=options.parse_size_budget, default=None,
        help="with --qat-budget: also require the .tflite to be at most this many bytes")
    add("--qat-resume", type=options.parse_run_id, default=None,
        help="continue run RUN_ID: cases whose record with the same config hash exists are not re-measured")
    add("--qat-strict-baseline", action="store_true", default=False,
        help="with --qat-baseline: stale entries (config hash changed) fail the run too (CI uses this)")
    add("--qat-shard", type=options.parse_shard, default=(), metavar="I/K",
        help="run shard I (0-based) of K: a deterministic, cost-balanced share of the selected cases; "
             "K shards with the same selection and --qat-run-id together run every case once")
    add("--qat-check-gpu", action="store_true", default=False,
        help="fail at start-up unless TensorFlow sees a GPU (for GPU runners)")


def _pytest_layer_options(add) -> None:
    """Which tests pytest runs and what the terminal shows (PYTEST_LAYER), and the latency switch."""
    add("--qat-skip", action="store_true", default=False,
        help="deselect every qatbench case (like -m 'not qatbench'): run only a project's other tests")
    add("--qat-only", action="store_true", default=False,
        help="deselect every test that is not a qatbench case")
    add("--qat-keep-tflite", action="store_true", default=False,
        help="write each case's deployable .tflite (the audited bytes) to <run>/cases/<case>.tflite; its sha256 is "
             "the record's tflite_sha256 either way")
    add("--qat-progress", type=options.parse_progress, default="auto",
        help="live progress of long phases (case, phase, step or epoch of total, time left): auto (on unless -q, "
             "xdist or no terminal), on, off")
    add("--qat-latency", type=options.parse_latency, default=None, metavar="on|off", help="batch-1 LiteRT latency "
        "of each case's .tflite over its control, ~1 s a case (default on, or $QATBENCH_LATENCY); off: times null")


def run_options(config) -> RunOptions:
    get = config.getoption
    return RunOptions(
        tier=get("qat_tier"), bits=get("qat_bits"), orders=get("qat_orders"), seeds=get("qat_seeds"),
        methods=get("qat_methods"),
        strategy=get("qat_strategy"), workers=get("qat_workers"), results=str(get("qat_results")),
        run_id=get("qat_resume") or get("qat_run_id"), baseline=get("qat_baseline"),
        save_baseline=get("qat_save_baseline"), resume=get("qat_resume"), named_run_id=get("qat_run_id"),
        cache=get("qat_cache"), threads=get("qat_threads"), timeout=get("qat_timeout"),
        drop_tolerance=get("qat_drop_tolerance"), budget=get("qat_budget"), size_budget=get("qat_size_budget"),
        strict_baseline=get("qat_strict_baseline"), check_gpu=get("qat_check_gpu"),
        shard=get("qat_shard"), mixed_budgets=get("qat_mixed_budgets"), keep_tflite=get("qat_keep_tflite"),
        latency=get("qat_latency"),
        **register.run_options(get),
    )


def default_run_options() -> RunOptions:
    """The options of a run that gave no --qat-* option: what tells whether a run asked for qatbench."""
    defaults = _Defaults()
    addoption(defaults)
    return run_options(SimpleNamespace(getoption=defaults.values.__getitem__))


class _Defaults:
    """Records each option's default as pytest would (dest from the long name), without pytest's
    private Parser class."""

    def __init__(self):
        self.values: dict = {}

    def getgroup(self, *args, **kwargs):
        return self

    def addoption(self, *names, **kwargs):
        dest = kwargs.get("dest") or names[0].lstrip("-").replace("-", "_")
        self.values[dest] = kwargs.get("default", False if kwargs.get("action") == "store_true" else None)
