"""`python -m harness spread`: the cross-machine spread of each model's drops, for the regression gate
(harness/results/machines.py computes it; this reads the sources and writes the file)."""

from __future__ import annotations

from pathlib import Path

from harness.tools.run_input import BadInput, baseline_file, load_run


def add_arguments(sub) -> None:
    sub.add_argument("sources", nargs="+", help="baseline files or run folders of the same cases on different machines "
                     "(or numerics settings, e.g. TF_ENABLE_ONEDNN_OPTS=0), and earlier spread files, whose "
                     "measured spreads are kept")
    sub.add_argument("--save", required=True, help="spread JSON to write, e.g. results/baselines/machine-spread.json")


def run(args) -> int:
    from harness.results import baseline, machines

    sources, earlier, named = [], {}, []
    for source in args.sources:
        try:
            prior = machines.read_spread_file(source)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        if prior is not None:  # an earlier spread file: its measured pairs are kept (their runs may be gone)
            earlier = machines.larger_spread(earlier, prior[0])
            named += [s for s in prior[1] if s not in named]
            continue
        named.append(source)
        if Path(source).is_dir():
            recs = load_run(source)
            machine = next((r["env"]["machine"] for r in recs if (r.get("env") or {}).get("machine")), {})
            sources.append((source, baseline.entries_from_records(recs), machine, machines.versions_of(recs)))
        else:
            saved = baseline_file(source)
            sources.append((source, saved.entries, saved.machine, saved.versions))
    models = machines.spread(sources, earlier)
    machines.save_spread(models, args.save, named)
    for model, item in sorted(models.items()):
        pairs = f"{item['pairs']} pairs; " if "pairs" in item else ""  # an earlier file's entry need not say
        print(f"{model}: spread {item['spread_pp']:.2f} pp ({pairs}{' vs '.join(item.get('between') or ['earlier'])})")
    print(f"wrote {args.save}" + ("" if models else " (no two sources on different machines share a configuration)"))
    return 0
