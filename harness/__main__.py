"""The command line, ``qatbench COMMAND`` (or ``python -m harness COMMAND``), on finished run folders:
``plan`` (the largest N within an accuracy, size or latency budget, or the best mixed float/INT8/INT4 plan
within a weight-bytes budget), ``baseline`` (save a regression baseline), ``rerun`` (how far each case
moved between two runs), ``spread`` (each model's cross-machine spread, for the gate), ``report`` (write
the report again), ``merge`` (the end of a session on a sharded folder: harness/session_end.py) and
``perf`` (the suite measured against itself).

Subcommands are registered in ``COMMANDS`` (name -> (add_arguments, run, help)). Bad input exits with
status 2 and a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from harness.errors import one_line
from harness.results import records as _records
from harness.design.config import METHODS, ORDERS
from harness.tools import pretrain_speed, spread_command
from harness.tools.run_input import BadInput, load_run
from harness.tools.run_input import baseline_file as _baseline

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise BadInput(f"{self.prog}: {message}")


def _add_plan(sub) -> None:
    sub.add_argument("--results", required=True, help="run folder with records.jsonl or cases/*.json")
    sub.add_argument("--budget", type=float, default=None,
                     help="accuracy budget, percentage points (>= 0); required unless the plan is mixed")
    sub.add_argument("--size-budget", type=float, default=None,
                     help="max .tflite bytes of last-N; also (or alone, or with --order mixed) the best mixed "
                          "float/INT8/INT4 plan within this many weight bytes, checked against --budget")
    sub.add_argument("--model", default=None, help="only this model")
    sub.add_argument("--order", default=None, choices=ORDERS,
                     help="selection order to plan for (default: last; mixed without --budget)")
    sub.add_argument("--method", default=None, choices=METHODS, help="qat or ptq (default: both)")
    sub.add_argument("--extrapolate", action="store_true", help="allow N beyond the largest measured N")
    sub.add_argument("--latency-budget", type=float, default=None, metavar="RATIO",
                     help="largest N whose batch-1 LiteRT latency ratio quantized/control (upper 95%% bound of "
                          "every timed run) is at most RATIO, e.g. 1.0 (last-N plans; ratios hold for the measuring CPU)")


def _run_plan(args) -> int:
    from harness.analysis import plan as _plan

    if args.order == "mixed" or (args.order is None and args.budget is None and args.size_budget is not None):
        return _run_mixed_plan(args)
    if args.budget is None:
        raise BadInput("plan: --budget PP is required (or --size-budget BYTES alone, for the mixed plan)")
    with_mixed = args.order is None and args.size_budget is not None  # both budgets: last-N and the mixed plan
    args.order = args.order or "last"
    try:
        _plan.check_budget(args.budget, args.size_budget)
        _plan.check_latency_budget(args.latency_budget)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    records = load_run(args.results)
    if args.model is not None and not any(r.get("model") == args.model for r in records):
        known = sorted({str(r.get("model")) for r in records})
        raise BadInput(f"model {args.model!r} not in {args.results} (has: {', '.join(known)})")
    plans = _plan.plan_table(records, args.budget, size_budget=args.size_budget, model=args.model,
                             orders=(args.order,), method=args.method, extrapolate=args.extrapolate,
                             latency_budget=args.latency_budget)
    if with_mixed and not plans:  # no last-N records: the mixed plan alone
        return _run_mixed_plan(args, records)
    if not plans:
        raise BadInput(f"no records with order {args.order!r} in {args.results}")
    title = f"plan: accuracy budget {args.budget:g} pp"
    if args.size_budget is not None:
        title += f", size budget {args.size_budget:,.0f} B"
    if args.latency_budget is not None:
        title += f", latency ratio budget {args.latency_budget:g}"
    print(title)
    for line in _plan.format_plans(plans):
        print(line)
    if with_mixed:
        _print_mixed(*_mixed_answers(args, records))
    return 0


def _mixed_answers(args, records) -> tuple:
    """(answers, one-line reasons for the models without one) of the mixed planner."""
    from harness.analysis import mixed_planner

    models = [args.model] if args.model else sorted({str(r.get("model")) for r in records})
    answers, missing = [], []
    for model in models:
        try:
            answers.append(mixed_planner.mixed_answer(records, model, args.size_budget, args.budget))
        except ValueError as exc:
            missing.append(f"{model}: {one_line(exc)}")
    return answers, missing


def _print_mixed(answers, missing) -> None:
    from harness.analysis import mixed_planner

    for answer in answers:
        for line in mixed_planner.format_answer(answer):
            print(line)
    for line in missing:
        print(f"note: no mixed plan for {line}", file=sys.stderr)


def _run_mixed_plan(args, records=None) -> int:
    """The best mixed float/INT8/INT4 selection within --size-budget weight bytes, per model with scores,
    its calibrated drop and, with --budget, whether its upper 95% bound is within it."""
    from harness.analysis import mixed_planner, plan as _plan

    if args.size_budget is None:
        raise BadInput("the mixed plan needs --size-budget BYTES (a weight-bytes budget)")
    try:
        mixed_planner.check_size_budget(args.size_budget)
        if args.budget is not None:
            _plan.check_budget(args.budget)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    records = load_run(args.results) if records is None else records
    answers, missing = _mixed_answers(args, records)
    if not answers:
        raise BadInput(missing[0] if len(missing) == 1 else f"no model with a feasible mixed plan: {'; '.join(missing)}")
    _print_mixed(answers, missing)
    return 0


def _add_perf(sub) -> None:
    sub.add_argument("--models", default=",".join(("mlp", "cnn", "resnet20")),
                     help="comma-separated models (default: mlp,cnn,resnet20; resnet50 works with short steps)")
    sub.add_argument("--tier", default="smoke", choices=("smoke", "full"), help="data tier (default smoke)")
    sub.add_argument("--last", type=int, default=3, help="N for the last-N QAT configuration (default 3)")
    sub.add_argument("--bits", default="8,4", help="weight bit widths (default 8,4)")
    sub.add_argument("--repeats", type=int, default=9,
                     help="interleaved rounds (rotating order); ratios are min/median/max and the median's 95%% "
                          "interval, which needs >= 6 rounds (default 9)")
    sub.add_argument("--steps", type=int, default=10,
                     help="at least this many train steps per model per round (short: 3); more for fast models")
    sub.add_argument("--round-ms", type=float, default=300.0,
                     help="each round lasts at least this long per model, timed on the float model (default 300)")
    sub.add_argument("--results", default="results", help="folder for the perf run folder")
    sub.add_argument("--run-id", default=None, help="run folder name (default: perf-<timestamp>)")
    sub.add_argument("--sweep", default=None, metavar="K_EXPR",
                     help="also time `pytest benchmarks -k K_EXPR` at -n 0 and -n 2 (cases per hour)")
    sub.add_argument("--cache", default=None, help="pre-trained baseline cache for --sweep (default: $QATBENCH_CACHE or .qatbench-cache)")
    sub.add_argument("--determinism", action="store_true",
                     help="also time float and whole-model QAT steps with op determinism on vs off (fresh processes)")


LIMITS = {"repeats": (1, 1000), "steps": (1, 100000), "last": (0, 1000), "round_ms": (0.0, 600000.0)}


def _check_perf(args) -> tuple:
    """Every perf argument checked before anything is measured: (models, bits, out_dir)."""
    from harness import options
    from harness.design import registry

    try:
        models = [registry.get(m.strip()) for m in args.models.split(",")]
        bits = options.parse_bits(args.bits)
        results = options.parse_results_dir(args.results)
        args.cache = str(options.parse_cache_dir(args.cache or str(options.default_cache_dir())))
        run_id = options.parse_run_id(args.run_id) if args.run_id is not None else f"perf-{_records.new_run_id()}"
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise BadInput(str(exc)) from None
    for name, (low, high) in LIMITS.items():
        if not low <= getattr(args, name) <= high:
            raise BadInput(f"--{name.replace('_', '-')} must be in {low:g}..{high:g}, got {getattr(args, name)}")
    out_dir = results / run_id
    if (out_dir / "perf.json").exists():
        raise BadInput(f"--run-id {run_id}: {out_dir} already holds a perf run; choose another run id")
    if args.sweep is not None and not sweep_cases(args.sweep):
        raise BadInput(f"--sweep {args.sweep!r}: no benchmark case matches (pytest benchmarks -k {args.sweep!r})")
    return models, bits, out_dir


def _check_k_expression(expr: str) -> None:
    """A malformed -k expression is one line now, not a sweep of nothing after the whole measurement."""
    try:
        from _pytest.mark.expression import Expression  # pytest's own parser (private: checked again below)
    except ImportError:
        return
    try:
        Expression.compile(expr)
    except Exception as exc:  # noqa: BLE001 - pytest 9 raises SyntaxError, pytest 8 its own ParseError
        why = getattr(exc, "msg", None) or getattr(exc, "message", None) or str(exc)
        raise BadInput(f"--sweep {expr!r}: not a pytest -k expression ({one_line(why)})") from None


def sweep_cases(expr: str) -> int:
    """How many benchmark cases ``pytest -k expr`` selects (collection only: no TensorFlow)."""
    import subprocess
    import tempfile

    _check_k_expression(expr)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "--collect-only", "-q", "-p",
                           "no:cacheprovider", "-k", expr, "--qat-results", tempfile.gettempdir()],
                          cwd=root, capture_output=True, text=True, timeout=300)
    if done.returncode not in (0, 5):  # pytest lists every case before it rejects -k: its rc, not the list, decides
        last = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()[-1]
        raise BadInput(f"--sweep {expr!r}: pytest refuses it: {last[:300]}")
    return sum(1 for line in done.stdout.splitlines() if "::" in line)


def _run_perf(args) -> int:
    models, bits, out_dir = _check_perf(args)
    from harness.tools import perf

    perf.run([m.name for m in models], args.tier, args.last, bits, args.repeats, args.steps, out_dir,
             args.sweep, Path(args.cache), args.determinism, args.round_ms)
    print(f"wrote {out_dir / 'perf.json'} and {out_dir / 'perf.md'}")
    return 0


def _add_baseline(sub) -> None:
    sub.add_argument("--results", required=True, help="a finished run folder (cases/*.json)")
    sub.add_argument("--save", required=True, help="baseline JSON to write (per-seed drops, accuracies, bytes, noise)")


def _run_baseline(args) -> int:
    from harness.results.baseline import save_baseline

    records = load_run(args.results)
    tiers = sorted({str(r.get("tier")) for r in records})
    if len(tiers) != 1:
        raise BadInput(f"{args.results} mixes tiers {', '.join(tiers)}: a baseline is for one tier")
    machines = [r.get("env", {}).get("machine") for r in records if isinstance(r.get("env"), dict)]
    try:
        saved = save_baseline(records, args.save, tier=tiers[0], machine=machines[0] if machines else None)
    except OSError as exc:
        raise BadInput(f"cannot write {args.save}: {exc.strerror or exc}") from None
    print(f"baseline {args.save}: {len(saved.entries)} entries from {len(records)} records (tier {tiers[0]})")
    from harness.analysis.gate_power import noise_lines

    for line in noise_lines(saved):
        print(line)
    return 0


def _add_rerun(sub) -> None:
    sub.add_argument("first", help="run folder A (e.g. the run the baseline came from)")
    sub.add_argument("second", help="run folder B: the same cases on another machine or with other numerics")


def _run_rerun(args) -> int:
    from harness.analysis import rerun

    rows = rerun.summary(load_run(args.first), load_run(args.second))
    if not rows:
        raise BadInput(f"no case measured in both {args.first} and {args.second} with the same config hash")
    for line in rerun.format_summary(rows):
        print(line)
    return 0


def _add_report(sub) -> None:
    sub.add_argument("--results", required=True, help="run folder whose report.md and plots to write anew")


def _run_report(args) -> int:
    from harness.analysis import report

    path = report.write_report(load_run(args.results), Path(args.results)).path
    print(f"report: {path}")
    return 0


def _add_merge(sub) -> None:
    sub.add_argument("run", help="run folder that shards wrote into (cases/*.json)")
    sub.add_argument("--baseline", default=None, help="baseline JSON to gate the merged records against")
    sub.add_argument("--strict-baseline", action="store_true", help="stale baseline entries fail too")


def _run_merge(args) -> int:
    """The end of a session (harness/session_end.py), on a folder that shards wrote into: records.jsonl and
    summary.csv from cases/*.json, the drop targets, the size checks, the report and the baseline gate,
    exactly as a single pytest run ends; its problems are printed and fail the command."""
    from harness.session_end import EndOptions, finish_run

    run_dir = Path(args.run)
    if not (run_dir / _records.CASES_DIR).is_dir():
        raise BadInput(f"no run folder with {_records.CASES_DIR}/ at {run_dir}")
    # every baseline case absent from the merged folder is missing: a sharded sweep runs the whole grid
    end = finish_run(run_dir, EndOptions(baseline=_baseline(args.baseline), strict_baseline=args.strict_baseline))
    if not end.merged:
        raise BadInput(f"no records in {run_dir / _records.CASES_DIR}")
    print(f"merged {len(end.merged) + len(end.left_out)} records: {run_dir / 'records.jsonl'}")
    print(f"report: {end.report_path}")
    for verdict in end.verdicts:
        if verdict.status != "ok":
            print(f"  {verdict.status}: {verdict.message}")
    for line in end.inconclusive:
        print(line)
    for line in end.problems:  # the lines that fail a pytest session fail the merge
        print(f"problem: {line}", file=sys.stderr)
    return 1 if end.problems else 0


def _run_pretrain_speed(args) -> int:
    try:
        models, seeds, epochs, sizes = pretrain_speed.checked(args)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    pretrain_speed.run(models, args.tier, seeds, epochs, Path(args.out), *sizes, precision=args.precision,
                       whole_runs=args.one_fit)
    return 0


COMMANDS = {
    "plan": (_add_plan, _run_plan, "largest N within an accuracy (and size) budget, or the best mixed "
                                    "float/INT8/INT4 plan within a weight-bytes budget"),
    "baseline": (_add_baseline, _run_baseline, "save a regression baseline from a finished run"),
    "spread": (spread_command.add_arguments, spread_command.run, "the cross-machine spread of each model's drops, for the regression gate"),
    "rerun": (_add_rerun, _run_rerun, "how far each case's drop moved between two runs of the same cases"),
    "report": (_add_report, _run_report, "write a run folder's report.md and plots again"),
    "merge": (_add_merge, _run_merge, "merge the per-case records of a (sharded) run folder, write the report, gate"),
    "perf": (_add_perf, _run_perf, "QAT vs float step time, TFLite latency, memory, sweep throughput"),
    "pretrain-speed": (pretrain_speed.add_arguments, _run_pretrain_speed,
                       "a tier's pre-training recipe against the original loop: images/s and accuracy, side by side"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m harness", description="qatbench tools")
    subs = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (add, _run, help_text) in COMMANDS.items():
        add(subs.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        status = COMMANDS[args.command][1](args)
        sys.stdout.flush()  # a reader gone away shows here, inside the handler, not in the interpreter's exit
        return status
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return _closed_pipe()


def _closed_pipe() -> int:
    """The reader went away (``| head -1``): quiet, as the Python docs advise: stdout goes to devnull so the
    interpreter's final flush cannot raise again. Whatever was written to files is written."""
    import os

    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by a closed pipe


if __name__ == "__main__":
    sys.exit(main())
