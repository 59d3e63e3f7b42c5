"""The pytest plugin: one option group, a session object, and thin hooks (wired in conftest.py)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import pytest

from harness.results import gates, records, rescue
from harness.design import grid, registry
from harness import options
from harness.external import register
from harness.design.config import Case, RunOptions
from harness.errors import describe, one_line
from harness.limits import CaseTimeout, time_limit

GROUP = "qatbench"


def addoption(parser) -> None:
    group = parser.getgroup(GROUP, "qatbench: partial quantization-aware training benchmarks")
    add = group.addoption
    add("--qat-tier", type=options.parse_tier, default="smoke",
        help="work per case: smoke (default, CI), full (all data, more steps, seeds, bits, orders) or "
             "reference (last vs first, 3 seeds: the research question)")
    add("--qat-bits", type=options.parse_bits, default=(),
        help="comma-separated weight bit widths 2..8 (default: the tier's, e.g. 8,4)")
    add("--qat-orders", type=options.parse_orders, default=(),
        help="comma-separated selection orders: last, first, single, type, sensitivity, mixed (default: the "
             "tier's); mixed: float/INT8/INT4 per unit within a weight-bytes budget (--qat-mixed-budgets)")
    add("--qat-mixed-budgets", type=options.parse_mixed_budgets, default=(), metavar="BYTES,...",
        help="weight-bytes budgets of the mixed order's cases, e.g. 150000,300000 (default: the tier's); "
             "one case per budget and seed, id <model>-mixed-b150k")
    add("--qat-methods", type=options.parse_methods, default=(),
        help="comma-separated: qat (fine-tune with fake-quant) and/or ptq (selective post-training "
             "quantization of the fine-tuned float control; 8-bit only). Default: the tier's")
    add("--qat-seeds", type=options.parse_seeds, default=(),
        help="comma-separated seeds (default: the tier's)")
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
    register.addoption(add)


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
        shard=get("qat_shard"), mixed_budgets=get("qat_mixed_budgets"), **register.run_options(get),
    )


cases_for = grid.cases_for  # conftest and older callers import it from here


class QatSession:
    """State of one pytest session: options, the run folder, and the records written so far."""

    def __init__(self, config):
        self.config = config
        self.options = run_options(config)
        self.is_worker = hasattr(config, "workerinput")
        run_id = config.workerinput.get("qat_run_id") if self.is_worker else None
        self.run_id = run_id or self.options.run_id or records.new_run_id()
        self.run_dir = Path(self.options.results) / self.run_id
        self.cache_dir = Path(self.options.cache or options.default_cache_dir())
        self.threads = self.options.threads
        if self.threads is None:
            self.threads = 1 if self.is_worker else 0
        self._check_options()
        try:
            self.options = register.register_all(config, self.options)
        except register.BAD_INPUT as exc:
            raise pytest.UsageError(one_line(exc)) from None
        if self.options.check_gpu:
            _check_gpu()
        self.baseline = self._load_baseline(self.options.baseline)
        if self.baseline is not None and self.baseline.tier not in (None, self.options.tier):
            raise pytest.UsageError(f"--qat-baseline {self.options.baseline} was saved by a {self.baseline.tier} run; "
                                    f"this run is --qat-tier {self.options.tier}")
        self.collected = None  # case ids collected by this session (unknown on an xdist controller)
        self.collected_deselected = False
        self.refused = False  # a shard refused at collection: its session end must not touch the folder
        self.verdicts: tuple = ()
        self.inconclusive: list = []
        if self.options.resume and not (self.run_dir / records.CASES_DIR).is_dir():
            raise pytest.UsageError(f"--qat-resume {self.options.resume}: no run folder {self.run_dir}")
        self._check_start()
        self.ran_cases = 0
        self.report_path = None
        self._env = None
        self.merged: list = []
        self.merge_problems: list = []
        self.problems: list = []
        self.notes: list = []
        self.unwritten: list = []  # records the run folder refused: kept, merged and reported at the end
        self.finishing = False
        rescue.SigtermAsInterrupt(lambda: self.finishing).install()

    def _check_options(self) -> None:
        """Start-up checks across options and the environment: one-line usage errors, before any case."""
        try:
            options.check_environment()
            options.check_options(self.options)
            grid.check_mixed_budgets(self.options)
        except (options.Bad, ValueError) as exc:
            raise pytest.UsageError(str(exc)) from None

    def _check_start(self) -> None:
        reused = (self.run_dir / "records.jsonl").exists() or any((self.run_dir / records.CASES_DIR).glob("*"))
        if self.options.shard:  # shards share a folder: checked per case at collection (select_shard)
            return
        if reused and not self.is_worker and not self.options.resume:
            raise pytest.UsageError(f"--qat-run-id {self.run_id}: {self.run_dir} already holds a run; continue it "
                                    f"with --qat-resume {self.run_id}, or choose another run id")

    @staticmethod
    def _load_baseline(path):
        if path is None:
            return None
        from harness.results.baseline import BaselineError, load_baseline

        try:
            return load_baseline(path)
        except BaselineError as exc:
            raise pytest.UsageError(str(exc)) from None

    # -- per case -------------------------------------------------------------------------
    def environment(self):
        if self._env is None:
            from harness.case import pipeline  # imports TensorFlow: only when a case really runs
            from harness.backend import set_threads

            set_threads(self.threads)
            self._env = pipeline.Environment(self.cache_dir, records.git_commit(), self.threads)
        return self._env

    def run(self, case: Case, runner=None) -> tuple:
        """Measure a case and write its record. Returns (record, violations, resumed).
        ``runner`` replaces runner.run_case (tests inject faults with it)."""
        from harness.case import pipeline

        from harness.distributed.runner import run_case

        runner = runner or run_case
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
            with time_limit(self.options.timeout):
                record.update(runner(case, spec, env))
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (rescue.SigtermAsInterrupt): record it, then stop
            record.update(status="interrupted", error=f"interrupted by {exc.args[0] if exc.args else 'SIGINT'}")
            self._keep(record)
            raise
        except Exception as exc:  # kept as data, then reported as the case's failure
            record.update(status=_status_of(exc), error=describe(exc))
            return record, [record["error"]] + self._keep(record), False
        self._store_predictions(record, record.pop(pipeline.PREDICTIONS, None))
        try:
            found = gates.violations(record, spec.thresholds)
        except Exception as exc:  # noqa: BLE001 - a check that cannot read the record must not lose it
            found = [f"checks failed: {describe(exc)}"]
        record.update(status="failed" if found else "passed", violations=found)
        return record, found + self._keep(record), False

    def _keep(self, record: dict) -> list:
        """Write the case record. If the run folder refuses it, the record is kept in memory (merged and
        reported at the session end) and copied to the rescue folder; returns that as one problem line."""
        path = records.case_path(self.run_dir, record["case_id"])
        try:
            with rescue.signals_deferred():
                try:
                    records.write_atomic(path, record)
                except (TypeError, ValueError):  # a value JSON cannot hold: store its repr rather than nothing
                    records.write_atomic(path, rescue.plain(record))
            return []
        except (OSError, TypeError, ValueError) as exc:
            self.unwritten.append(rescue.plain(record))
            copy = rescue.save_record(self.run_dir, record)
            where = f"a copy is at {copy}" if copy else "kept in memory only"
            return [f"record not written to {path} ({describe(exc)}); {where}"]

    def _store_predictions(self, record: dict, predictions) -> None:
        """The predicted labels go to a file beside the record; failing to write them is noted in
        the record, never a reason to lose the measurement."""
        if predictions is None:
            return
        try:
            record.update(records.write_predictions(self.run_dir, record["case_id"], predictions))
        except (OSError, ValueError, KeyError) as exc:
            record["predictions_error"] = describe(exc)

    def _finished_record(self, case_id: str, config_hash: str):
        """With --qat-resume: the case's record if it finished (passed/failed) with the same config."""
        if not self.options.resume:
            return None
        path = records.case_path(self.run_dir, case_id)
        if not path.exists():
            return None
        try:
            record = records.read_case_record(path)
        except (OSError, ValueError) as exc:  # malformed: measured again, which replaces the file
            warnings.warn(rescue.RunFolderWarning(f"--qat-resume: {path} skipped, unreadable ({one_line(exc)}); "
                                                  f"re-measuring {case_id}"))
            return None
        if record.get("config_hash") == config_hash and record.get("status") in records.MEASURED:
            return record
        return None

    # -- session end (controller only) ------------------------------------------------------
    def finish(self) -> Optional[str]:
        """Merge this run's records, gate, report. Each step is guarded: one failing step is one line
        in ``problems`` and the steps after it still run, so measured work is never thrown away.
        Returns a failure message for the session, if any."""
        if self.is_worker or self.refused:
            return None
        self.finishing = True  # a SIGTERM from now on waits for the records and the report
        if not (self.run_dir / records.CASES_DIR).is_dir() and not self.unwritten and not rescue.pending(self.run_dir):
            return None
        trouble: list = []
        for name, step in (("merge", self._merge_step), ("baseline save", self._save_baseline_step),
                           ("baseline gate", self._gate_step), ("drop targets", self._target_step),
                           ("report", self._report_step), ("size checks", self._size_step)):
            try:
                trouble += step() or []
            except Exception as exc:  # noqa: BLE001 - the next steps must still run
                trouble.append(f"session end: {name} failed: {describe(exc)}")
        self.problems = trouble
        return "; ".join(trouble) if trouble else None

    def _merge_step(self) -> list:
        self.merged, self.merge_problems = rescue.merge_run(self.run_dir, self.unwritten)
        return self.merge_problems

    def _save_baseline_step(self) -> list:
        if self.options.save_baseline:
            from harness.results.baseline import save_baseline

            target = Path(self.options.save_baseline)
            return rescue.elsewhere(target, rescue.rescue_dir(self.run_dir) / target.name, lambda path: save_baseline(
                self.merged, path, tier=self.options.tier, machine=records.machine()), "baseline")[1]
        return []

    def _gate_step(self) -> list:
        """The seed-level regression gate (harness/baseline_gate.py) over every key of the run and the baseline."""
        if self.baseline is None:
            return []
        from harness.results import baseline_gate

        self.verdicts = baseline_gate.gate(self.merged, self.baseline, self._gate_context())
        baseline_gate.record_verdicts(self.merged, self.verdicts)
        return baseline_gate.failures(self.verdicts, self.options.strict_baseline)

    def _gate_context(self):
        from harness.results.baseline_gate import context_for

        return context_for(registry.thresholds_of, self.options.drop_tolerance, expected=self.collected,
                           narrowed=self._narrowed())

    def _narrowed(self) -> bool:
        """Did this session leave part of the tier's grid out on purpose (so absent baseline cases
        are 'not selected' rather than missing)?"""
        opts, option = self.options, self.config.option
        by_options = any((opts.bits, opts.orders, opts.seeds, opts.methods, opts.mixed_budgets)) or opts.shard[1:] > (1,)
        by_selection = bool(getattr(option, "keyword", "") or getattr(option, "markexpr", ""))
        by_node_id = any("::" in str(arg) for arg in self.config.args)
        return by_options or by_selection or by_node_id or self.collected_deselected

    def select_shard(self, items) -> tuple:
        """With --qat-shard I/K: split ``items`` (after -k/-m) into (kept, deselected) case items; items
        that are no benchmark case are kept. Refuses a shard whose cases already have records in the
        run folder, unless --qat-resume."""
        if not self.options.shard:
            return list(items), []
        from harness.design import shard

        index, count = self.options.shard
        case_of = {id(item): item.callspec.params["qat_case"] for item in items
                   if hasattr(item, "callspec") and "qat_case" in item.callspec.params}
        mine = shard.shard_ids(case_of.values(), index, count)
        kept = [item for item in items if id(item) not in case_of or case_of[id(item)].id in mine]
        dropped = [item for item in items if id(item) in case_of and case_of[id(item)].id not in mine]
        done = sorted(i for i in mine if records.case_path(self.run_dir, i).exists())
        if done and not self.is_worker and not self.options.resume:
            self.refused = True
            raise pytest.UsageError(
                f"--qat-run-id {self.run_id} --qat-shard {index}/{count}: {self.run_dir} already holds records of "
                f"{len(done)} case(s) of this shard (e.g. {done[0]}); continue with --qat-resume {self.run_id}")
        return kept, dropped

    def collection_finished(self, items) -> None:
        """Remember which cases this session collected (the controller, without xdist, sees them)."""
        ids = [item.callspec.params["qat_case"].id for item in items
               if hasattr(item, "callspec") and "qat_case" in item.callspec.params]
        xdist_controller = not items and getattr(self.config.option, "dist", "no") != "no"
        self.collected = None if xdist_controller else frozenset(ids)

    def deselected(self, items) -> None:
        self.collected_deselected = self.collected_deselected or any(
            hasattr(item, "callspec") and "qat_case" in item.callspec.params for item in items)

    def _report_step(self) -> list:
        from harness.analysis import report

        def write(folder):
            return report.write_report(self.merged, folder, budget_pp=self.options.budget, size_budget=self.options.size_budget,
                                       problems=self.merge_problems).path

        self.report_path, trouble = rescue.elsewhere(self.run_dir, rescue.rescue_dir(self.run_dir), write, "report")
        return trouble

    def _target_step(self) -> list:
        failures, self.inconclusive = gates.drop_targets(self.merged, registry.thresholds_of)
        return failures

    def _size_step(self) -> list:
        self.notes = gates.size_not_decreasing(self.merged, "tflite_bytes")
        return gates.size_not_decreasing(self.merged)

    def summary_lines(self) -> list:
        from harness.summary import session_lines

        return session_lines(self)


def _check_gpu() -> None:
    from harness.backend import tf  # lists devices without initializing TensorFlow

    if not tf.config.list_physical_devices("GPU"):
        raise pytest.UsageError("--qat-check-gpu: TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') "
                                "is empty): check the driver, CUDA libraries and CUDA_VISIBLE_DEVICES")


def _status_of(exc: Exception) -> str:
    from harness.case.train import TrainingDiverged

    if isinstance(exc, TrainingDiverged):
        return "nan"
    return "timeout" if isinstance(exc, CaseTimeout) else "error"


def fail(message: str):
    pytest.fail(message, pytrace=False)
