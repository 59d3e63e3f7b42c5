"""`python -m harness pretrain-speed`: a tier's pre-training recipe against the original loop, side by side.

Both recipes pre-train the same model from the same seed on the same data in one process, an epoch of
one, then an epoch of the other (the order alternating), so machine noise hits both alike. Reported per
model and seed: images/s of each (epoch 1, which traces the graph, left out), their ratio per epoch pair
(median and range), and the test accuracy each reaches: a faster recipe counts only at the same accuracy.
Each epoch reshuffles with its own seed (the suite's one-fit loop draws one shuffle stream instead).

An epoch here is one Keras fit, but the suite pre-trains in one fit for all epochs. When fit returns, its
tf.data iterator (a full-size shuffle buffer, repeat, prefetch) is torn down, which can block for seconds
(measured: 0.01 to 14 s on a loaded 2-core machine, varying epoch to epoch): a cost the one-fit loop pays
once per pre-training, not per epoch. So each epoch is timed to its last step's end (``in_fit_s``: fit's
set-up, the shuffle fill and the steps) and the teardown is kept beside it (``teardown_s``); the speed-up
is of the in-fit times, and the wall-clock one (``speedup_wall``, each epoch's whole fit) is kept too.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from harness.design import registry
from harness.design.config import PRECISIONS, PretrainRecipe
from harness.results import records

ORIGINAL = PretrainRecipe()


def _epoch(run, shuffle_seed: int) -> tuple:
    """One epoch of ``run`` (a pretrain.Pretraining) as Pretraining.fit trains it, in one fit: (seconds to
    the end of the last step, seconds after it until fit returned)."""
    from harness.backend import keras
    from harness.case import train

    class LastStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.end = time.perf_counter()

    clock = LastStep()
    start = time.perf_counter()
    train.fit_steps(run.model, run.data, run.per_epoch, run.resolved.batch_size, shuffle_seed,
                    callbacks=[clock], steps_per_epoch=run.per_epoch)
    done = time.perf_counter()
    return clock.end - start, done - clock.end


def _ratios(original, recipe, scale: float) -> dict:
    """Per epoch pair (the first, which traces, left out) how many times faster the recipe is per image."""
    pairs = [o / r / scale for o, r in zip(original[1:], recipe[1:])] or [original[0] / recipe[0] / scale]
    return {"median": float(np.median(pairs)), "min": float(min(pairs)), "max": float(max(pairs))}


def _runs(spec, config, seed: int, data, epochs: int, precision=None, names=("original", "recipe")) -> dict:
    """A fresh pretrain.Pretraining per recipe in ``names``, from the same seed."""
    from harness.case import cache, pretrain

    build = lambda: cache.build(spec, data)  # noqa: E731
    flags = cache.cpu_flags()
    if precision is not None:  # what the recipe does on a CPU kind that resolves to another precision
        config = replace(config, pretrain=replace(config.pretrain, precision=precision))
    recipes = {"original": replace(config, pretrain=ORIGINAL), "recipe": config}
    return {name: pretrain.Pretraining(build, pretrain.resolve(recipes[name], flags), seed, data, epochs,
                                       recipes[name].train_step_xla)
            for name in names}


def compare(model: str, tier: str, seed: int, epochs: int, train_size=None, test_size=None, precision=None) -> dict:
    """One model and seed: both recipes for ``epochs`` epochs, interleaved."""
    from harness.case import train

    spec = registry.get(model)
    config = spec.tier(tier)
    data = spec.dataset.load()(train_size if train_size is not None else config.train_size,
                               test_size if test_size is not None else config.test_size)
    runs = _runs(spec, config, seed, data, epochs, precision)
    in_fit, teardown = {name: [] for name in runs}, {name: [] for name in runs}
    for epoch in range(epochs):
        order = list(runs) if epoch % 2 == 0 else list(reversed(runs))
        for name in order:
            steps_s, after_s = _epoch(runs[name], shuffle_seed=seed * 1000 + epoch)
            in_fit[name].append(steps_s)
            teardown[name].append(after_s)
        print(f"  {model} seed {seed} epoch {epoch + 1}/{epochs}: "
              + ", ".join(f"{name} {in_fit[name][-1]:.1f} s (+{teardown[name][-1]:.1f} s teardown)" for name in runs),
              flush=True)
    out = {"model": model, "tier": tier, "seed": seed, "epochs": epochs, "train_examples": int(len(data.y_train)),
           "test_examples": int(len(data.y_test)), "recipes": {}}
    for name, run in runs.items():
        images = run.per_epoch * run.resolved.batch_size
        model_ = run.float_model()
        wall = [a + b for a, b in zip(in_fit[name], teardown[name])]
        out["recipes"][name] = {
            "recipe": run.resolved.text, "in_fit_s": in_fit[name], "teardown_s": teardown[name], "epoch_s": wall,
            "images_per_s": images * max(1, epochs - 1) / sum(in_fit[name][1:] or in_fit[name]),
            "images_per_s_wall": images * max(1, epochs - 1) / sum(wall[1:] or wall),
            "test_accuracy": train.keras_accuracy(model_, data.x_test, data.y_test)}
    # images per epoch of the original over the recipe's (drop_remainder: the batches differ)
    scale = (runs["original"].per_epoch * runs["original"].resolved.batch_size) / (
        runs["recipe"].per_epoch * runs["recipe"].resolved.batch_size)
    out["speedup"] = _ratios(in_fit["original"], in_fit["recipe"], scale)
    out["speedup_wall"] = _ratios(out["recipes"]["original"]["epoch_s"], out["recipes"]["recipe"]["epoch_s"], scale)
    out["accuracy_gain_pp"] = 100.0 * (out["recipes"]["recipe"]["test_accuracy"]
                                       - out["recipes"]["original"]["test_accuracy"])
    return out


ONE_FIT_ORDER = ("original", "recipe", "recipe", "original")  # ABBA: a drift of the machine hits both alike


def one_fit(model: str, tier: str, seed: int, epochs: int, train_size=None, test_size=None, precision=None) -> dict:
    """Each recipe's whole pre-training as the suite runs it (pretrain.run: one fit for every epoch, its
    tracing and its one teardown included), twice, in the order ONE_FIT_ORDER, each from a fresh model."""
    spec = registry.get(model)
    config = spec.tier(tier)
    data = spec.dataset.load()(train_size if train_size is not None else config.train_size,
                               test_size if test_size is not None else config.test_size)
    rates = {"original": [], "recipe": []}
    for name in ONE_FIT_ORDER:
        run_ = _runs(spec, config, seed, data, epochs, precision, names=(name,))[name]
        seconds = run_.fit(run_.steps, seed)
        rates[name].append(run_.steps * run_.resolved.batch_size / seconds)
        print(f"  {model} seed {seed} one fit of {epochs} epochs: {name} {seconds:.1f} s", flush=True)
    ratio = float(np.mean(rates["recipe"]) / np.mean(rates["original"]))
    return {"images_per_s": rates, "speedup": ratio,
            "speedup_range": [float(min(rates["recipe"]) / max(rates["original"])),
                              float(max(rates["recipe"]) / min(rates["original"]))]}


def lines(result: dict) -> list:
    head = (f"{result['model']} {result['tier']} seed {result['seed']}: {result['epochs']} epochs of "
            f"{result['train_examples']} images, test {result['test_examples']}")
    rows = [head]
    for name, r in result["recipes"].items():
        rows.append(f"  {name:9s} {r['images_per_s']:8.0f} images/s  accuracy {r['test_accuracy']:.4f}  ({r['recipe']})")
    s = result["speedup"]
    rows.append(f"  recipe/original: {s['median']:.2f}x images/s per epoch pair [{s['min']:.2f}, {s['max']:.2f}], "
                f"accuracy {result['accuracy_gain_pp']:+.2f} pp")
    wall = result.get("speedup_wall")
    if wall:
        teardown = {name: sum(r.get("teardown_s", ())) for name, r in result["recipes"].items()}
        rows.append(f"  with each epoch's fit teardown: {wall['median']:.2f}x [{wall['min']:.2f}, {wall['max']:.2f}] "
                    f"(teardown in all: " + ", ".join(f"{n} {t:.1f} s" for n, t in teardown.items()) + ")")
    whole = result.get("one_fit")
    if whole:
        rates = whole["images_per_s"]
        rows.append(f"  one fit of {result['epochs']} epochs each, twice (as the suite pre-trains): recipe/original "
                    f"{whole['speedup']:.2f}x [{whole['speedup_range'][0]:.2f}, {whole['speedup_range'][1]:.2f}] "
                    f"(original {', '.join(f'{r:.0f}' for r in rates['original'])}, recipe "
                    f"{', '.join(f'{r:.0f}' for r in rates['recipe'])} images/s)")
    return rows


def run(models, tier: str, seeds, epochs: int, out_dir: Path, train_size=None, test_size=None,
        precision=None, whole_runs: bool = False) -> dict:
    report = {"env": {"cpu": records.cpu(), "commit": records.git_commit()}, "results": []}
    out_dir.mkdir(parents=True, exist_ok=True)
    for model in models:
        for seed in seeds:
            result = compare(model, tier, seed, epochs, train_size, test_size, precision)
            if whole_runs:
                result["one_fit"] = one_fit(model, tier, seed, epochs, train_size, test_size, precision)
            report["results"].append(result)
            print("\n".join(lines(result)), flush=True)
            records.write_text_atomic(out_dir / "pretrain-speed.json", json.dumps(report, indent=1))
    return report


def add_arguments(sub) -> None:
    sub.add_argument("--models", default="cnn,resnet20", help="comma-separated models (default cnn,resnet20)")
    sub.add_argument("--tier", default="reference", help="the tier whose recipe is compared (default reference)")
    sub.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    sub.add_argument("--epochs", default="10", help="epochs each recipe trains (default 10; the tier's own count "
                                                    "is what the suite runs)")
    sub.add_argument("--train-size", default=None, help="train examples (default: the tier's)")
    sub.add_argument("--test-size", default=None, help="test examples (default: the tier's)")
    sub.add_argument("--precision", default=None, choices=PRECISIONS,
                     help="override the recipe's precision (float32: what a CPU without native bf16 runs)")
    sub.add_argument("--one-fit", action="store_true",
                     help="also time each recipe's whole pre-training in one fit, as the suite runs it (twice each)")
    sub.add_argument("--out", default="results/pretrain-speed", help="folder for pretrain-speed.json")


def _integers(text: str, what: str, low: int, high: int) -> tuple:
    try:
        values = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(not low <= v <= high for v in values):
        raise ValueError(f"{what} must be in {low}..{high}, got {text!r}")
    return values


def checked(args) -> tuple:
    """Every argument checked before anything trains (ValueError, one line): (models, seeds, epochs, sizes)."""
    models = tuple(name for name in str(args.models).split(",") if name)
    for name in models or ("",):
        spec = registry.get(name)
        if args.tier not in spec.tiers:
            raise ValueError(f"model {name!r} has no tier {args.tier!r} (it has {', '.join(spec.tiers)})")
    seeds = _integers(args.seeds, "--seeds", 0, 2 ** 31 - 1)
    (epochs,) = _integers(args.epochs, "--epochs", 1, 1000)
    sizes = [None if v is None else _integers(v, flag, 1, 10 ** 8)[0]
             for v, flag in ((args.train_size, "--train-size"), (args.test_size, "--test-size"))]
    return models, seeds, epochs, sizes
