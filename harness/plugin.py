"""The pytest plugin: one option group, a session object, and thin hooks (wired in conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import pytest

from . import checks, options, records, registry
from .config import Case, QuantConfig, RunOptions, Selection
from .limits import CaseTimeout, time_limit

GROUP = "qatbench"


def addoption(parser) -> None:
    group = parser.getgroup(GROUP, "qatbench: partial quantization-aware training benchmarks")
    add = group.addoption
    add("--qat-tier", type=options.parse_tier, default="smoke",
        help="work per case: smoke (default, CI) or full (all data, more steps, seeds, bits, orders)")
    add("--qat-bits", type=options.parse_bits, default=(),
        help="comma-separated weight bit widths 2..8 (default: the tier's, e.g. 8,4)")
    add("--qat-orders", type=options.parse_orders, default=(),
        help="comma-separated selection orders: last, first, single, type (default: the tier's)")
    add("--qat-methods", type=options.parse_methods, default=(),
        help="comma-separated: qat (fine-tune with fake-quant) and/or ptq (selective post-training "
             "quantization of the fine-tuned float control; 8-bit only). Default: the tier's")
    add("--qat-seeds", type=options.parse_seeds, default=(),
        help="comma-separated seeds (default: the tier's)")
    add("--qat-strategy", type=options.parse_strategy, default="default",
        help="tf.distribute strategy for fine-tuning: default, mirrored, multiworker")
    add("--qat-workers", type=options.parse_workers, default=1,
        help="number of devices (mirrored) or worker processes (multiworker)")
    add("--qat-threads", type=options.parse_threads, default=None,
        help="TensorFlow intra/inter-op threads per process (default: 1 under xdist, else TF's default)")
    add("--qat-results", type=options.parse_results_dir, default=Path("results"),
        help="folder for run folders (default: results/)")
    add("--qat-run-id", type=options.parse_run_id, default=None,
        help="name of this run's folder under --qat-results (default: a UTC timestamp)")
    add("--qat-cache", type=Path, default=None,
        help="folder of pre-trained float baselines (default: $QATBENCH_CACHE or .qatbench-cache)")
    add("--qat-timeout", type=options.parse_timeout, default=0.0,
        help="per-case time limit in seconds; a case past it is recorded with status timeout (0: none)")
    add("--qat-baseline", type=options.parse_existing_file, default=None,
        help="baseline JSON to gate against: a case fails if its drop worsens by more than the tolerance "
             "or its .tflite grows by more than 1%%; entries with another config hash are reported stale")
    add("--qat-save-baseline", type=Path, default=None,
        help="write this run's per-case medians (drop, bytes, config hash) as a baseline JSON")
    add("--qat-drop-tolerance", type=options.parse_tolerance, default=None,
        help="pp of extra accuracy drop allowed against the baseline (default: each model spec's)")
    add("--qat-budget", type=options.parse_budget, default=None,
        help="accuracy budget in pp: print the largest N whose predicted drop (upper 95%% bound) fits")
    add("--qat-size-budget", type=options.parse_budget, default=None,
        help="with --qat-budget: also require the .tflite to be at most this many bytes")
    add("--qat-resume", type=options.parse_run_id, default=None,
        help="continue run RUN_ID: cases whose record with the same config hash exists are not re-measured")
    add("--qat-check-gpu", action="store_true", default=False,
        help="fail at start-up unless TensorFlow sees a GPU (for GPU runners)")


def run_options(config) -> RunOptions:
    get = config.getoption
    return RunOptions(
        tier=get("qat_tier"), bits=get("qat_bits"), orders=get("qat_orders"), seeds=get("qat_seeds"),
        methods=get("qat_methods"),
        strategy=get("qat_strategy"), workers=get("qat_workers"), results=str(get("qat_results")),
        run_id=get("qat_resume") or get("qat_run_id"), baseline=get("qat_baseline"),
        save_baseline=get("qat_save_baseline"), resume=get("qat_resume"),
    )


def cases_for(opts: RunOptions) -> list:
    """Every (model, selection, bits, seed) case of the tier, in a stable order."""
    cases = []
    for spec in registry.REGISTRY.values():
        if opts.tier not in spec.tiers:
            continue
        tier = spec.tier(opts.tier)
        for order in opts.orders or tier.orders:
            for selection in _selections(spec, tier, order):
                for method in opts.methods or tier.methods:
                    for bits in opts.bits or tier.bits:
                        if method == "ptq" and bits != 8:
                            continue
                        for seed in opts.seeds or tier.seeds:
                            cases.append(Case(spec.name, selection, QuantConfig(bits, method=method), opts.tier,
                                              seed, opts.strategy, opts.workers))
    return cases


def _selections(spec, tier, order) -> list:
    if order == "type":
        return [Selection("type", kind=kind) for kind in spec.unit_kinds]
    if order == "single":
        return [Selection("single", k) for k in range(spec.num_units)]
    if order == "first":  # first 0 and first L are the same models as last 0 and last L
        return [Selection(order, n) for n in tier.n_values if 0 < n < spec.num_units]
    return [Selection(order, n) for n in tier.n_values if n <= spec.num_units]


class QatSession:
    """State of one pytest session: options, the run folder, and the records written so far."""

    def __init__(self, config):
        self.config = config
        self.options = run_options(config)
        self.is_worker = hasattr(config, "workerinput")
        run_id = config.workerinput.get("qat_run_id") if self.is_worker else None
        self.run_id = run_id or self.options.run_id or records.new_run_id()
        self.run_dir = Path(self.options.results) / self.run_id
        cache = config.getoption("qat_cache") or os.environ.get("QATBENCH_CACHE") or ".qatbench-cache"
        self.cache_dir = Path(cache)
        self.threads = config.getoption("qat_threads")
        if self.threads is None:
            self.threads = 1 if self.is_worker else 0
        self.timeout = config.getoption("qat_timeout")
        self.drop_tolerance = config.getoption("qat_drop_tolerance")
        self.budget = config.getoption("qat_budget")
        self.size_budget = config.getoption("qat_size_budget")
        if self.size_budget is not None and self.budget is None:
            raise pytest.UsageError("--qat-size-budget needs --qat-budget")
        if config.getoption("qat_check_gpu"):
            _check_gpu()
        self.baseline = self._load_baseline(self.options.baseline)
        if self.options.resume and not (self.run_dir / records.CASES_DIR).is_dir():
            raise pytest.UsageError(f"--qat-resume {self.options.resume}: no run folder {self.run_dir}")
        self.ran_cases = 0
        self.report_path = None
        self._env = None
        self.merged: list = []
        self.problems: list = []
        self.notes: list = []

    @staticmethod
    def _load_baseline(path):
        if path is None:
            return None
        from .baseline import BaselineError, load_baseline

        try:
            return load_baseline(path)
        except BaselineError as exc:
            raise pytest.UsageError(str(exc)) from None

    # -- per case -------------------------------------------------------------------------
    def environment(self):
        if self._env is None:
            from . import pipeline  # imports TensorFlow: only when a case really runs
            from .backend import tf

            if self.threads:
                tf.config.threading.set_intra_op_parallelism_threads(self.threads)
                tf.config.threading.set_inter_op_parallelism_threads(self.threads)
            self._env = pipeline.Environment(self.cache_dir, records.git_commit(), self.threads)
        return self._env

    def run(self, case: Case, runner=None) -> tuple:
        """Measure a case and write its record. Returns (record, violations, resumed).
        ``runner`` replaces pipeline.run_case (tests inject faults with it)."""
        from . import pipeline

        runner = runner or pipeline.run_case
        spec = registry.get(case.model)
        env = self.environment()
        fields = {**pipeline.describe_case(case, spec), "run_id": self.run_id}
        config_hash = case.config_hash(pipeline.spec_fingerprint(spec, case.tier))
        previous = self._finished_record(case.id, config_hash)
        if previous is not None:
            return previous, previous.get("violations") or [], True
        record = records.base_record(case.id, config_hash, fields, env.describe())
        self.ran_cases += 1
        try:
            with time_limit(self.timeout):
                record.update(runner(case, spec, env))
        except Exception as exc:  # kept as data, then reported as the case's failure
            record.update(status=_status_of(exc), error=f"{type(exc).__name__}: {_one_line(exc)}")
            records.write_atomic(records.case_path(self.run_dir, case.id), record)
            return record, [record["error"]], False
        found = checks.violations(record, spec.thresholds)
        record.update(status="failed" if found else "passed")
        found += self._baseline_verdict(record, spec)
        record.update(status="failed" if found else "passed", violations=found)
        records.write_atomic(records.case_path(self.run_dir, case.id), record)
        return record, found, False

    def _finished_record(self, case_id: str, config_hash: str):
        """With --qat-resume: the case's record if it finished (passed/failed) with the same config."""
        if not self.options.resume:
            return None
        path = records.case_path(self.run_dir, case_id)
        try:
            import json

            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if record.get("config_hash") == config_hash and record.get("status") in ("passed", "failed"):
            return record
        return None

    def _baseline_verdict(self, record: dict, spec) -> list:
        if self.baseline is None:
            return []
        from .baseline import compare

        tolerance = self.drop_tolerance
        if tolerance is None:
            tolerance = spec.thresholds.baseline_drop_tolerance_pp
        verdict = compare(record, self.baseline, tolerance)
        record["baseline"] = {"status": verdict.status, "message": verdict.message}
        return [f"baseline: {verdict.message}"] if verdict.status == "regressed" else []

    # -- session end (controller only) ------------------------------------------------------
    def finish(self) -> Optional[str]:
        """Merge the case records of this run; returns a failure message for the session, if any."""
        if self.is_worker or not (self.run_dir / records.CASES_DIR).is_dir():
            return None
        from . import report

        self.merged, self.problems = records.merge(self.run_dir)
        if self.options.save_baseline:
            from .baseline import save_baseline

            save_baseline(self.merged, self.options.save_baseline)
        self.report_path = report.write_report(self.merged, self.run_dir, budget_pp=self.budget,
                                               size_budget=self.size_budget, problems=self.problems).path
        self.notes = checks.size_not_decreasing(self.merged, "tflite_bytes")
        trouble = checks.size_not_decreasing(self.merged) + self.problems
        return "; ".join(trouble) if trouble else None

    def summary_lines(self) -> list:
        if not self.merged:
            return []
        lines = [f"{'case':<28} {'status':<7} {'drop pp':>8} {'tflite B':>10} {'x smaller':>9} {'qat/float':>9}"]
        for r in self.merged:
            if r.get("tflite_bytes"):
                ratio = "-" if r.get("step_ratio") is None else f"{r['step_ratio']:.2f}"  # PTQ: no QAT step
                lines.append(f"{r['case_id']:<28} {r['status']:<7} {r['accuracy_drop_pp']:>8.2f} "
                             f"{r['tflite_bytes']:>10} {r['control_tflite_bytes'] / r['tflite_bytes']:>9.2f} "
                             f"{ratio:>9}")
            else:
                lines.append(f"{r['case_id']:<28} {r['status']:<7} {r.get('error') or ''}")
        from . import report

        stale = [r["case_id"] for r in self.merged if (r.get("baseline") or {}).get("status") == "stale"]
        if stale:
            lines.append(f"baseline: {len(stale)} stale entries not compared (config changed): {', '.join(stale)}")
        lines += report.terminal_summary(self.merged, budget_pp=self.budget, size_budget=self.size_budget,
                                         report_path=self.report_path)
        lines += [f"note: {note} (file metadata, not weights)" for note in self.notes]
        lines.append(f"records: {self.run_dir / 'records.jsonl'}")
        return lines


def _check_gpu() -> None:
    from .backend import tf  # lists devices without initializing TensorFlow

    if not tf.config.list_physical_devices("GPU"):
        raise pytest.UsageError("--qat-check-gpu: TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') "
                                "is empty): check the driver, CUDA libraries and CUDA_VISIBLE_DEVICES")


def _status_of(exc: Exception) -> str:
    from .train import TrainingDiverged

    if isinstance(exc, TrainingDiverged):
        return "nan"
    return "timeout" if isinstance(exc, CaseTimeout) else "error"


def _one_line(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:500]


def fail(message: str):
    pytest.fail(message, pytrace=False)
