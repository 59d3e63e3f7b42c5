"""Command line: ``python -m harness plan --results DIR --budget 1.0 [--size-budget BYTES] [--model M]``.

Subcommands are registered in ``COMMANDS`` (name -> (add_arguments, run)); add more (e.g. ``perf``)
there. Bad input exits with status 2 and a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import records as _records

EXIT_BAD_INPUT = 2


class BadInput(Exception):
    """A user error: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise BadInput(f"{self.prog}: {message}")


def load_run(results: str) -> list:
    """Records of a run folder: records.jsonl if present, else cases/*.json."""
    run_dir = Path(results)
    if not run_dir.is_dir():
        raise BadInput(f"results folder not found: {run_dir}")
    merged = run_dir / "records.jsonl"
    try:
        records = _records.load_jsonl(merged) if merged.is_file() else _records.read_case_records(run_dir)[0]
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot read {merged}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    if not records:
        raise BadInput(f"no records in {run_dir} (expected records.jsonl or cases/*.json)")
    return records


def _add_plan(sub) -> None:
    sub.add_argument("--results", required=True, help="run folder with records.jsonl or cases/*.json")
    sub.add_argument("--budget", required=True, type=float, help="accuracy budget, percentage points (>= 0)")
    sub.add_argument("--size-budget", type=float, default=None, help="max .tflite bytes")
    sub.add_argument("--model", default=None, help="only this model")
    sub.add_argument("--order", default="last", help="selection order to plan for (default: last)")
    sub.add_argument("--method", default=None, help="qat or ptq (default: both)")
    sub.add_argument("--extrapolate", action="store_true", help="allow N beyond the largest measured N")


def _run_plan(args) -> int:
    from . import plan as _plan

    try:
        _plan.check_budget(args.budget, args.size_budget)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    records = load_run(args.results)
    if args.model is not None and not any(r.get("model") == args.model for r in records):
        known = sorted({str(r.get("model")) for r in records})
        raise BadInput(f"model {args.model!r} not in {args.results} (has: {', '.join(known)})")
    plans = _plan.plan_table(records, args.budget, size_budget=args.size_budget, model=args.model,
                             orders=(args.order,), method=args.method, extrapolate=args.extrapolate)
    if not plans:
        raise BadInput(f"no records with order {args.order!r} in {args.results}")
    title = f"plan: accuracy budget {args.budget:g} pp"
    if args.size_budget is not None:
        title += f", size budget {args.size_budget:,.0f} B"
    print(title)
    for line in _plan.format_plans(plans):
        print(line)
    return 0


def _add_perf(sub) -> None:
    sub.add_argument("--models", default=",".join(("mlp", "cnn", "resnet20")),
                     help="comma-separated models (default: mlp,cnn,resnet20; resnet50 works with short steps)")
    sub.add_argument("--tier", default="smoke", choices=("smoke", "full"), help="data tier (default smoke)")
    sub.add_argument("--last", type=int, default=3, help="N for the last-N QAT configuration (default 3)")
    sub.add_argument("--bits", default="8,4", help="weight bit widths (default 8,4)")
    sub.add_argument("--repeats", type=int, default=5, help="alternating rounds; ratios are min/median/max")
    sub.add_argument("--steps", type=int, default=10, help="train steps per model per round (short: 3)")
    sub.add_argument("--results", default="results", help="folder for the perf run folder")
    sub.add_argument("--run-id", default=None, help="run folder name (default: perf-<timestamp>)")
    sub.add_argument("--sweep", default=None, metavar="K_EXPR",
                     help="also time `pytest benchmarks -k K_EXPR` at -n 0 and -n 2 (cases per hour)")
    sub.add_argument("--cache", default=".qatbench-cache", help="pre-trained baseline cache for --sweep")
    sub.add_argument("--determinism", action="store_true",
                     help="also time float and whole-model QAT steps with op determinism on vs off (fresh processes)")


def _run_perf(args) -> int:
    from . import options

    try:
        models = [registry_get(m.strip()) for m in args.models.split(",")]
        bits = options.parse_bits(args.bits)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise BadInput(str(exc)) from None
    if args.repeats < 1 or args.steps < 1 or args.last < 0:
        raise BadInput("--repeats and --steps must be >= 1, --last >= 0")
    from . import perf

    run_id = args.run_id or f"perf-{_records.new_run_id()}"
    out_dir = Path(args.results) / run_id
    perf.run([m.name for m in models], args.tier, args.last, bits, args.repeats, args.steps, out_dir,
             args.sweep, Path(args.cache), args.determinism)
    print(f"wrote {out_dir / 'perf.json'} and {out_dir / 'perf.md'}")
    return 0


def registry_get(name: str):
    from . import registry

    return registry.get(name)


COMMANDS = {
    "plan": (_add_plan, _run_plan, "largest N within an accuracy (and size) budget"),
    "perf": (_add_perf, _run_perf, "QAT vs float step time, TFLite latency, memory, sweep throughput"),
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
        return COMMANDS[args.command][1](args)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
