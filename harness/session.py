"""The session object behind qatbench's pytest hooks (harness/pytest_plugin.py): the run folder, the
cases measured in it (one record each, through harness/measure.py), and the end of the run (harness/session_end.py)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import pytest

from harness.results import gates, records, rescue
from harness.design import grid, registry
import harness
from harness import options
from harness.external import register
from harness.pytest_options import run_options
from harness.design.config import Case, RunOptions
from harness.errors import describe, one_line
from harness.limits import CaseTimeout, time_limit
from harness.session_end import EndOptions, RunEnd, finish_run



class QatSession:
    """State of one pytest session: options, the run folder, and the records written so far."""

    def __init__(self, config, run_id: Optional[str] = None):
        harness.set_tf_environment()  # a case will run here: TensorFlow must see Keras 2 before its first import
        self.config = config
        self.options = run_options(config)
        self.is_worker = hasattr(config, "workerinput")
        if self.is_worker:
            run_id = config.workerinput.get("qat_run_id") or run_id
        self.run_id = run_id or self.options.run_id or records.new_run_id()
        self.run_dir = Path(self.options.results) / self.run_id
        self.cache_dir = Path(self.options.cache or options.default_cache_dir())
        self.threads = self.options.threads
        if self.threads is None:
            self.threads = 1 if self.is_worker else 0
        self._check_options()
        if self.threads and (self.options.model_file or self.options.check_gpu):
            self._set_threads()  # loading a model file or listing GPUs starts TensorFlow: its threads first
        try:
            self.options = register.register_model_file(self.options)
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
        if self.options.resume and not (self.run_dir / records.CASES_DIR).is_dir():
            raise pytest.UsageError(f"--qat-resume {self.options.resume}: no run folder {self.run_dir}")
        self._check_start()
        self.ran_cases = 0
        self._env = None
        self.end = RunEnd()  # what the end of the run found (harness/session_end.py)
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

            self._set_threads()
            self._env = pipeline.Environment(self.cache_dir, records.git_commit(), self.threads, self.options.latency)
        return self._env

    def _set_threads(self) -> None:
        from harness.backend import ThreadsFixed, set_threads

        try:
            set_threads(self.threads)
        except ThreadsFixed as exc:
            raise pytest.UsageError(str(exc)) from None

    def run(self, case: Case, runner=None) -> tuple:
        """Measure a case and write its record. Returns (record, violations, resumed).
        ``runner`` replaces harness.measure.measure (tests inject faults with it)."""
        from harness.case import pipeline
        from harness.measure import measure

        runner = runner or measure
        spec = registry.get(case.model)
        env = self.environment()
        fields = {**pipeline.describe_case(case, spec), "run_id": self.run_id}
        config_hash = case.config_hash(fields["spec_fingerprint"])  # the fingerprint, computed once per case
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
        self._store_tflite(record, record.pop(pipeline.TFLITE, None))
        try:
            found = gates.violations(record, spec.thresholds.for_tier(case.tier, spec.tiers.get(case.tier)))
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

    def _store_tflite(self, record: dict, content) -> None:
        """With --qat-keep-tflite: the audited .tflite, byte for byte, as cases/<case>.tflite (its sha256
        is the record's tflite_sha256). A write that fails is noted in the record, never fatal."""
        if content is None or not self.options.keep_tflite:
            return
        try:
            path = records.write_case_file(self.run_dir, record["case_id"], ".tflite", content)
            record["tflite_file"] = path.name
        except (OSError, ValueError) as exc:
            record["tflite_error"] = describe(exc)

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
        opts = self.options
        end = finish_run(self.run_dir, EndOptions(
            baseline=self.baseline, strict_baseline=opts.strict_baseline, drop_tolerance=opts.drop_tolerance,
            expected=self.collected, narrowed=self.baseline is not None and self._narrowed(),
            save_baseline=opts.save_baseline, tier=opts.tier,
            budget=opts.budget, size_budget=opts.size_budget), self.unwritten)
        self.end = end
        return "; ".join(end.problems) if end.problems else None

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

    def summary_lines(self) -> list:
        from harness.summary import session_lines

        return session_lines(self.end, self.baseline, self.options, self.run_dir)


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


