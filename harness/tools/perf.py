"""`python -m harness perf`: the suite measured against itself, side by side in one process.

Train-step time of float vs whole-model QAT vs last-N QAT (W8, W4), timed in alternating rounds;
TFLite inference latency of float vs W8 vs W4 (same batch, same threads, XNNPACK on) in tf.lite, and at
batch 1 also in LiteRT, the measuring runtime (harness/case/evaluate.py), in the same rounds, loaded and
timed by harness/case/latency.py as every case's latency is (one thread, interleaved rounds); peak memory;
optionally sweep throughput at -n 0 vs -n 2. Ratios are reported as min/median/max over repeats.
Models start from random weights: step time and latency do not depend on the weight values.
"""

from __future__ import annotations

import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from harness.results import records
from harness.design import registry
from harness.tools import steptime

DEFAULT_ROUND_MS = 300.0  # per model per round: long enough that one scheduler hiccup does not decide it

def _spread(values) -> dict:
    values = [float(v) for v in values]
    return {"min": min(values), "median": float(np.median(values)), "max": max(values)}


def train_step_ratios(spec, data, last_n: int, bits_list, repeats: int, steps: int,
                      round_ms: float = DEFAULT_ROUND_MS, xla_step: bool = False) -> dict:
    """Side-by-side train-step times. Unsuffixed names train as the suite does (``xla_step``: the tier's
    train_step_xla); ``-<OTHER_STEP>`` names are compiled the other way and ``-assignranges`` assigns
    tfmot's weight ranges in every step (harness/case/weight_ranges.py)."""
    from harness.case import quantize, train
    from harness.design.config import QuantConfig, Selection
    from harness.design.select import select

    train.set_seed(0)
    base = spec.builder.load()(spec.input_shape, data.num_classes)
    units = quantize.units_of(base)
    other = OTHER_STEP[xla_step]
    floats = ("float", f"float-{other}")  # the ratios' denominator: the faster of these in each round
    models = {name: quantize.annotate(base, (), QuantConfig(8)) for name in floats}
    for bits in bits_list:
        models[f"qat-whole-w{bits}"] = quantize.annotate(base, units, QuantConfig(bits))
        chosen = select(units, Selection("last", min(last_n, len(units))))
        models[f"qat-last{len(chosen)}-w{bits}"] = quantize.annotate(base, chosen, QuantConfig(bits))
        if bits == bits_list[0]:  # before/after of harness/case/fakequant.py and of a whole-step XLA, same rounds
            for variant in GRADIENT_VARIANTS + (other, ASSIGN_RANGES):
                models[f"qat-whole-w{bits}-{variant}"] = quantize.annotate(base, units, QuantConfig(bits))
    for name, model in models.items():
        variant = name.rsplit("-", 1)[-1]
        train.compile_for_training(model, 1e-4, xla_step != (variant == other))
        _trace_with_variant(model, data, variant)
    timed = steptime.interleaved_step_ms(models, data, 32, rounds=repeats, min_steps=steps, round_ms=round_ms)
    ms = {name: steptime.summary(timed["per_round_ms"][name]) for name in models}
    ratios = steptime.ratios_to_fastest(timed["per_round_ms"], floats)
    graphs = {name: train_graph_size(models[name], data) for name in ["float"] + [f"qat-whole-w{b}" for b in bits_list]}
    return {"step_ms": ms, "qat_over_float": ratios, "steps_per_round": timed["steps"], "train_graph": graphs,
            "models": models}


def train_graph_size(model, data) -> dict:
    """Graph nodes and variable writes of the model's traced train step (no retrace). A step of tiny ops
    costs about its dispatched ops, so for such a model (mlp) QAT/float follows the node ratio, and each
    variable write costs as much even under XLA (docs/performance.md)."""
    from harness.case import train

    step = model.train_function or model.make_train_function()
    graph = step.get_concrete_function(iter(train._train_dataset(data, 32, seed=0))).graph.as_graph_def()
    # the step's own nodes and those of the functions it calls (an XLA-compiled step is one call)
    ops = [node.op for node in graph.node] + [node.op for f in graph.library.function for node in f.node_def]
    return {"nodes": len(ops), "variable_writes": sum(op.startswith("Assign") for op in ops)}


# The suite trains each model's whole step as one XLA function or with TensorFlow's ops (oneDNN), as its
# tier's train_step_xla says (mlp: XLA). Float and whole-model QAT are also timed compiled the other way
# (``-xlastep`` or ``-opstep``); every ratio divides by the faster float of the two in each round
# (docs/performance.md).
OTHER_STEP = {False: "xlastep", True: "opstep"}
# whole-model QAT with tfmot's per-step weight-range assigns (harness/case/weight_ranges.py off)
ASSIGN_RANGES = "assignranges"


# Fake-quant training routes timed beside the default (C++ kernels for per-channel weights and activations,
# where they load; else the XLA per-channel forward for large kernels): TensorFlow's own ops and gradients
# everywhere (tfgrad), everything but the C++ kernels (nonative: session 10's route), and the C++ kernels
# for the weights only, TensorFlow's ops for the activations (tfactivations).
GRADIENT_VARIANTS = ("tfgrad", "nonative", "tfactivations")


def _trace_with_variant(model, data, variant: str) -> None:
    """Trace ``model``'s train step as fit_steps does (weight-range assigns skipped), or with one of
    GRADIENT_VARIANTS (harness/case/fakequant.py), or with tfmot's per-step assigns (ASSIGN_RANGES), so
    each route is timed side by side in one process; the process default is put back afterwards."""
    from harness.case import fakequant, train, weight_ranges

    if variant == "tfgrad":
        fakequant.install(False)
    elif variant in GRADIENT_VARIANTS:
        fakequant.install(True, native=variant == "tfactivations", native_activations=False)
    scope = contextlib.nullcontext() if variant == ASSIGN_RANGES else weight_ranges.skipping()
    try:
        with scope:
            model.make_train_function()(iter(train._train_dataset(data, 32, seed=0)))
    finally:
        fakequant.install(fakequant.enabled())


def _loaded(files: dict, data, batch: int, runtime: str) -> dict:
    """name -> interpreter of each file in ``runtime`` (harness/case/latency.py: one thread, warmed up)."""
    from harness.case import latency

    return {name: latency.load(content, data.x_test, runtime, batch) for name, content in files.items()}


def _over(numerators: list, denominators: list) -> dict:
    """Per-round numerator/denominator: min, median, max and the median's 95% interval (steptime.summary)."""
    return steptime.summary([n / d for n, d in zip(numerators, denominators)])


def latency_ratios(models: dict, data, bits_list, repeats: int, invokes: int = 50) -> dict:
    """Invoke latency of the float and whole-model QAT files in tf.lite at batch 1 and 32, and at batch 1
    also in LiteRT (``litert-<config>``), timed in the same interleaved rounds by harness/case/latency.py.
    ``batch1_fastest_float_over`` divides the fastest float configuration of each round (either runtime)
    by each configuration's time."""
    from harness.case import export, latency
    from harness.design.config import QuantConfig
    from harness.case.evaluate import LITERT, TFLITE, one_line, runtime_name

    files = {"float": export.to_tflite(models["float"], quantized=False)}
    for bits in bits_list:
        files[f"w{bits}"] = export.to_tflite(models[f"qat-whole-w{bits}"], quantized=True, quant=QuantConfig(bits))
    out = {"bytes": {k: len(v) for k, v in files.items()}, "threads": latency.THREADS,
           "runtimes": {TFLITE: runtime_name(TFLITE), LITERT: runtime_name(LITERT)}}
    rounds = {}
    for batch in (1, 32):
        interps = _loaded(files, data, batch, TFLITE)
        if batch == 1:
            try:
                interps.update({f"litert-{k}": v for k, v in _loaded(files, data, 1, LITERT).items()})
            except Exception as exc:  # noqa: BLE001 - a run without LiteRT still reports tf.lite, and why
                out["litert_error"] = one_line(exc)
        samples = rounds[batch] = latency.interleaved(interps, repeats, invokes)
        out[f"batch{batch}_ms"] = {k: steptime.summary(v) for k, v in samples.items()}
        out[f"batch{batch}_float_over"] = {k: _over(samples["float"], samples[k]) for k in files if k != "float"}
    floats = [k for k in rounds[1] if k.rsplit("-", 1)[-1] == "float"]  # float in either runtime
    fastest = [min(rounds[1][k][i] for k in floats) for i in range(repeats)]
    out["batch1_fastest_float"] = min(floats, key=lambda k: out["batch1_ms"][k]["median"])
    out["batch1_fastest_float_over"] = {k: _over(fastest, v) for k, v in rounds[1].items() if k not in floats}
    return out


def sweep_throughput(expr: str, cache_dir: Path, results: Path) -> dict:
    """Cases per hour of the same selection at -n 0 and -n 2 (baselines pre-trained first)."""
    base = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", "-k", expr,
            "--qat-cache", str(cache_dir), "--qat-results", str(results)]
    subprocess.run(base + ["--qat-run-id", "perf-warm", "-x"], capture_output=True, timeout=7200)
    out = {}
    for workers in (0, 2):
        start = time.perf_counter()
        done = subprocess.run(base + ["-n", str(workers), "--qat-run-id", f"perf-n{workers}"],
                              capture_output=True, text=True, timeout=7200)
        wall = time.perf_counter() - start
        cases = len(list((results / f"perf-n{workers}" / records.CASES_DIR).glob("*.json")))
        out[f"n{workers}"] = {"wall_s": wall, "cases": cases, "cases_per_hour": cases / max(wall, 1e-9) * 3600,
                              "exit": done.returncode}
    # no case ran (nothing matched, or every run failed): no ratio rather than a division by zero
    out["speedup"] = out["n2"]["cases_per_hour"] / out["n0"]["cases_per_hour"] if out["n0"]["cases"] else None
    return out


def tier_of(spec, tier: str) -> str:
    """The asked tier if the model has it, else its only one (minilm2: smoke, resnet50: full)."""
    return tier if tier in spec.tiers else next(iter(spec.tiers))


DETERMINISM_CHILD = """
import json, sys
from harness.tools import perf
print(json.dumps(perf.step_ms_in_this_process(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1")))
"""


def step_ms_in_this_process(model: str, tier: str, steps: int, deterministic: bool) -> dict:
    """Median float and whole-model W8 QAT train-step ms in a fresh process, optionally with
    ``tf.config.experimental.enable_op_determinism()`` (a process-wide switch, hence the process)."""
    from harness.case import quantize, train
    from harness.backend import tf
    from harness.design.config import QuantConfig
    from harness.case.pipeline import load_data

    if deterministic:
        tf.config.experimental.enable_op_determinism()
    spec = registry.get(model)
    data = load_data(spec, tier_of(spec, tier))
    train.set_seed(0)
    base = spec.builder.load()(spec.input_shape, data.num_classes)
    models = {"float": quantize.annotate(base, (), QuantConfig(8)),
              "qat": quantize.annotate(base, quantize.units_of(base), QuantConfig(8))}
    for m in models.values():
        train.compile_for_training(m, 1e-4)
    return train.side_by_side_step_ms(models, data, 32, rounds=3, steps=steps)


def determinism_cost(models, tier: str, repeats: int, steps: int) -> dict:
    """Step time with op determinism on vs off: fresh processes, alternated off/on ``repeats`` times."""
    out = {}
    for model in models:
        samples = {False: [], True: []}
        for _ in range(repeats):
            for deterministic in (False, True):
                done = subprocess.run([sys.executable, "-c", DETERMINISM_CHILD, model, tier, str(steps),
                                       "1" if deterministic else "0"], capture_output=True, text=True, timeout=3600)
                if done.returncode != 0:
                    raise RuntimeError(f"determinism child failed: {done.stderr.strip().splitlines()[-1:]}")
                samples[deterministic].append(json.loads(done.stdout.strip().splitlines()[-1]))
        out[model] = {kind: {"off_ms": _spread([s[kind] for s in samples[False]]),
                             "on_ms": _spread([s[kind] for s in samples[True]]),
                             "on_over_off": _spread([on[kind] / off[kind] for on, off in zip(samples[True], samples[False])])}
                      for kind in ("float", "qat")}
    return out


def run(models, tier: str, last_n: int, bits_list, repeats: int, steps: int, out_dir: Path,
        sweep: str | None, cache_dir: Path, determinism: bool = False, round_ms: float = DEFAULT_ROUND_MS) -> dict:
    from harness.backend import devices, numerics, versions
    from harness.case import native_kernels
    from harness.case.pipeline import load_data

    report = {"env": {"versions": versions(), "numerics": numerics(), "machine": records.machine(),
                      "devices": devices(), "git_commit": records.git_commit(),
                      "native_kernels": native_kernels.status()},
              "tier": tier, "last_n": last_n, "bits": list(bits_list), "repeats": repeats, "steps": steps,
              "round_ms": round_ms, "models": {}}
    print(header_line(report["env"]), flush=True)
    for name in models:
        spec = registry.get(name)
        model_tier = tier_of(spec, tier)
        data = load_data(spec, model_tier)
        start = time.perf_counter()
        xla_step = spec.tier(model_tier).train_step_xla
        step = train_step_ratios(spec, data, last_n, bits_list, repeats, steps, round_ms, xla_step)
        entry = {k: v for k, v in step.items() if k != "models"}
        entry["tier"], entry["train_step"] = model_tier, "xla" if xla_step else "ops"
        entry["latency"] = latency_ratios(step["models"], data, bits_list, repeats)
        entry["wall_s"] = time.perf_counter() - start
        entry["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        report["models"][name] = entry
        print("\n".join(table({name: entry})), flush=True)
        _write(report, out_dir)  # a later model's failure loses nothing measured so far
    if sweep:
        report["sweep"] = sweep_throughput(sweep, cache_dir, out_dir / "sweep")
    if determinism:
        report["determinism"] = determinism_cost(models, tier, max(2, repeats // 2), steps)
    print("\n".join(sweep_lines(report)), flush=True)
    _write(report, out_dir)
    return report


def header_line(env: dict) -> str:
    """Which machine measured: the ratios hold for one CPU kind (VNNI decides whether int8 pays)."""
    cpu = env["machine"]["cpu"]
    flags = " ".join(cpu["flags"]) or "none of " + " ".join(records.CPU_FLAGS)
    return (f"perf on {cpu['model'] or 'unknown CPU'} ({env['machine']['cpu_count']} CPUs; flags: {flags}); "
            f"{env['devices']['summary']}; tensorflow {env['versions']['tensorflow']}")


def _write(report: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    records.write_text_atomic(out_dir / "perf.json", json.dumps(report, indent=1))
    lines = [header_line(report["env"]), "```"] + table(report["models"]) + sweep_lines(report) + ["```"]
    records.write_text_atomic(out_dir / "perf.md", "\n".join(lines) + "\n")


def table(models: dict) -> list:
    width = max([20] + [len(config) for entry in models.values() for config in entry["qat_over_float"]])
    lines = [f"{'model':<10} {'config':<{width}} {'step ms (med)':>13} {'QAT/float min/med/max':>24} {'med 95% CI':>13} "
             f"{'lat b1 float/q':>15} {'lat b32 float/q':>16} {'LiteRT b1 fastest-float/q':>26}"]
    for name, entry in models.items():
        lines.append(f"{name:<10} {'float':<{width}} {entry['step_ms']['float']['median']:>13.1f}")
        for config, ratio in entry["qat_over_float"].items():
            lines.append(f"{name:<10} {config:<{width}} {entry['step_ms'][config]['median']:>13.1f} "
                         f"{ratio['min']:>7.2f} {ratio['median']:>7.2f} {ratio['max']:>8.2f} "
                         f"{_interval_text(ratio.get('ci95')):>13} {_latency_columns(config, entry['latency'])}")
        steps = entry.get("steps_per_round")
        if steps:
            lines.append(f"{name:<10} {steps} steps per model per round, {entry['step_ms']['float']['rounds']} rounds")
        graph = entry.get("train_graph")
        if graph:
            lines.append(f"{name:<10} train-step graph: " + ", ".join(
                f"{config} {g['nodes']} nodes ({g['variable_writes']} variable writes)" for config, g in graph.items()))
        lines.append(latency_line(name, entry["latency"]))
        lines.append(f"{name:<10} peak RSS {entry['peak_rss_mb']:.0f} MB, {entry['wall_s']:.0f} s")
    return lines


def _interval_text(interval) -> str:
    return "too few rounds" if not interval else f"{interval[0]:.2f}-{interval[1]:.2f}"


def _latency_columns(config: str, lat: dict) -> str:
    """Latency ratios, shown on the whole-model rows of the default route (the ones the files come from)."""
    bits = config.split("-")[2] if config.startswith("qat-whole-") else None
    if bits is None or config != f"qat-whole-{bits}":
        return ""
    b1 = lat["batch1_float_over"].get(bits, {}).get("median")
    b32 = lat["batch32_float_over"].get(bits, {}).get("median")
    lite = lat["batch1_fastest_float_over"].get(f"litert-{bits}", {}).get("median")
    return (f"{'' if b1 is None else f'{b1:.2f}x':>15} {'' if b32 is None else f'{b32:.2f}x':>16} "
            f"{'' if lite is None else f'{lite:.2f}x':>26}")


def latency_line(name: str, lat: dict) -> str:
    """Batch-1 invoke ms in both runtimes side by side, and which float configuration was fastest."""
    ms = {k: v["median"] for k, v in lat["batch1_ms"].items()}
    tflite = " ".join(f"{k} {v:.3g}" for k, v in ms.items() if not k.startswith("litert-"))
    litert = " ".join(f"{k[len('litert-'):]} {v:.3g}" for k, v in ms.items() if k.startswith("litert-"))
    litert = litert or f"failed: {lat.get('litert_error')}"
    over = ", ".join(f"{k[len('litert-'):]} {v['median']:.2f}x ({_interval_text(v.get('ci95'))})"
                     for k, v in lat["batch1_fastest_float_over"].items() if k.startswith("litert-"))
    return (f"{name:<10} b1 ms {lat['runtimes']['tflite']}: {tflite} | {lat['runtimes']['litert']}: {litert} "
            f"(fastest float: {lat['batch1_fastest_float']})" + (f"; LiteRT fastest-float/q, 95% CI: {over}" if over else ""))


def sweep_lines(report: dict) -> list:
    lines = []
    for model, kinds in report.get("determinism", {}).items():
        for kind, d in kinds.items():
            lines.append(f"op determinism {model} {kind}: {d['off_ms']['median']:.1f} -> {d['on_ms']['median']:.1f} ms/step, "
                         f"on/off {d['on_over_off']['min']:.2f} {d['on_over_off']['median']:.2f} {d['on_over_off']['max']:.2f}")
    sweep = report.get("sweep")
    if not sweep:
        return lines
    ratio = "no case ran" if sweep.get("speedup") is None else f"{sweep['speedup']:.2f}x"
    return lines + [f"sweep: -n 0 {sweep['n0']['cases_per_hour']:.0f} cases/h, -n 2 {sweep['n2']['cases_per_hour']:.0f} "
            f"cases/h: {ratio}"]
