"""Type parsers for the --qat-* options and the QATBENCH_* environment variables.

A bad value fails when parsed, in one line naming the allowed range or choices. Ranges are what a
user would expect on a real machine: threads at most a small multiple of the cores, workers at most
the cores (a documented cap), seeds below 2**32, timeouts finite and positive.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path

from harness.design.config import MAX_BITS, MAX_BUDGET_BYTES, MIN_BITS, ORDERS, STRATEGIES, TIERS

Bad = argparse.ArgumentTypeError

THREADS_PER_CORE = 4  # --qat-threads at most this many per core (oversubscription beyond is only slower)
MAX_SEED = 2 ** 32 - 1  # numpy / TensorFlow seeds are 32-bit
MAX_TIMEOUT_S = 7 * 24 * 3600.0  # a week: SIGALRM and the worker watchdog take finite, bounded times
MAX_PP = 100.0  # accuracy budgets and tolerances are percentage points of accuracy
MAX_SIZE_BYTES = 1e12
RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=@,-]{0,99}")


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def max_threads() -> int:
    return THREADS_PER_CORE * cores()


def max_workers() -> int:
    """Devices (mirrored) or TensorFlow processes (multiworker) on one machine: one per core, at least 2."""
    return max(2, cores())


def _known(kind: str, value: str, choices: tuple) -> str:
    if value not in choices:
        raise Bad(f"unknown {kind} {value!r}; choose from: {', '.join(choices)}")
    return value


def _choice(name: str, choices: tuple):
    def parse(value: str) -> str:
        return _known(name, value, choices)
    parse.__name__ = name
    return parse


parse_tier = _choice("tier", TIERS)
parse_strategy = _choice("strategy", STRATEGIES)
parse_progress = _choice("progress", ("auto", "on", "off"))


def parse_latency(value: str) -> bool:
    """--qat-latency on|off: time each case's .tflite beside its control in LiteRT (harness/case/latency.py)."""
    return _known("latency", value, ("on", "off")) == "on"


def _int_list(name: str, low: int, high):
    def parse(value: str) -> tuple:
        top = high() if callable(high) else high
        items = []
        for raw in value.split(","):
            raw = raw.strip()
            try:
                item = int(raw)
            except ValueError:
                raise Bad(f"{name} must be integers in {low}..{top}, got {raw!r}") from None
            if not low <= item <= top:
                raise Bad(f"{name} must be in {low}..{top}, got {item}")
            items.append(item)
        if not items:
            raise Bad(f"{name} needs at least one value")
        return tuple(dict.fromkeys(items))
    parse.__name__ = name
    return parse


parse_bits = _int_list("bits", MIN_BITS, MAX_BITS)
parse_seeds = _int_list("seeds", 0, MAX_SEED)
parse_mixed_budgets = _int_list("mixed budgets (bytes)", 1, MAX_BUDGET_BYTES)


def _names(kind: str, choices: tuple):
    def parse(value: str) -> tuple:
        return tuple(_known(kind, name, choices) for name in dict.fromkeys(n.strip() for n in value.split(",")))
    parse.__name__ = kind
    return parse


parse_orders = _names("order", ORDERS)


def parse_methods(value: str) -> tuple:
    from harness.design.config import METHODS

    return _names("method", METHODS)(value)


def _int_range(name: str, low: int, high, note: str = ""):
    def parse(value: str) -> int:
        top = high()
        try:
            number = int(value)
        except ValueError:
            raise Bad(f"{name} must be an integer in {low}..{top}{note}, got {value!r}") from None
        if not low <= number <= top:
            raise Bad(f"{name} must be in {low}..{top}{note}, got {number}")
        return number
    parse.__name__ = name
    return parse


parse_workers = _int_range("workers", 1, max_workers, " (at most one device or process per core)")
parse_threads = _int_range("threads", 0, max_threads,
                           f" (0: TensorFlow's default; at most {THREADS_PER_CORE} per core)")


def _number(name: str, low: float, high: float, unit: str, positive: bool = False, zero_ok: bool = False):
    """A finite number in [low, high] (or > low with ``positive``); ``zero_ok``: 0 also means "none"."""
    lower = f"> {low:g}" if positive else f">= {low:g}"
    allowed = f"a finite number {lower} and <= {high:g}{unit}" + (" (0: none)" if zero_ok else "")

    def parse(value) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise Bad(f"{name} must be {allowed}, got {value!r}") from None
        if zero_ok and number == 0:
            return 0.0
        if not math.isfinite(number) or number > high or number < low or (positive and number == low):
            raise Bad(f"{name} must be {allowed}, got {value!r}")
        return number
    parse.__name__ = name
    return parse


parse_budget = _number("budget", 0.0, MAX_PP, " pp")
parse_tolerance = _number("tolerance", 0.0, MAX_PP, " pp")
parse_size_budget = _number("size budget", 0.0, MAX_SIZE_BYTES, " bytes", positive=True)
parse_timeout = _number("timeout", 1.0, MAX_TIMEOUT_S, " s", zero_ok=True)
parse_seconds = _number("seconds", 1.0, MAX_TIMEOUT_S, " s")


MAX_SHARDS = 1000


def parse_shard(value: str) -> tuple:
    """"I/K" -> (I, K): run shard I (0-based) of K; 0 <= I < K, 1 <= K <= MAX_SHARDS."""
    index, slash, count = str(value).strip().partition("/")
    try:
        index, count = int(index), int(count)
    except ValueError:
        raise Bad(f"shard must be I/K with integers 0 <= I < K <= {MAX_SHARDS}, got {value!r}") from None
    if not slash or not 1 <= count <= MAX_SHARDS or not 0 <= index < count:
        raise Bad(f"shard must be I/K with 0 <= I < K and 1 <= K <= {MAX_SHARDS}, got {value!r}")
    return index, count


def _writable_folder(what: str, value) -> Path:
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise Bad(f"{what} {str(value)!r} exists and is not a directory")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise Bad(f"{what} {str(value)!r} is not writable ({probe} is not a writable folder)")
    return path


def parse_results_dir(value: str) -> Path:
    return _writable_folder("results directory", value)


def xdist_worker() -> "tuple | None":
    """(index, count) of this pytest-xdist worker process, or None outside xdist: the one place that
    reads xdist's environment (loopback counters are machine-wide, devices are shared round robin)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker:
        return None
    return int(worker.lstrip("gw") or 0), int(count or 1)


CACHE_ENV, CACHE_FOLDER = "QATBENCH_CACHE", ".qatbench-cache"


def default_cache_dir() -> Path:
    """$QATBENCH_CACHE, else .qatbench-cache: the one default for the plugin, the CLI and workers."""
    return Path(os.environ.get(CACHE_ENV) or CACHE_FOLDER)


def parse_cache_dir(value: str) -> Path:
    return _writable_folder("cache directory", value)


KERNELS_ENV = "QATBENCH_KERNELS"


def default_kernel_dir() -> Path:
    """$QATBENCH_KERNELS, else the user's cache (~/.cache/qatbench/kernels): the compiled C++ kernels are
    shared by every run and cache folder of this user, keyed by what shapes them."""
    user_cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get(KERNELS_ENV) or Path(user_cache) / "qatbench" / "kernels")


def parse_output_file(value: str) -> Path:
    """A file this run will write at the end (--qat-save-baseline): checked now, not after the sweep."""
    path = Path(value)
    if not value or path.is_dir() or value.endswith(os.sep):
        raise Bad(f"output file {value!r} is a directory; name a file, e.g. {Path(value or '.') / 'baseline.json'}")
    if path.is_symlink() or (path.exists() and not path.is_file()):  # e.g. /dev/full: never replaced
        raise Bad(f"output file {value!r} is a link or a special file; name a regular file")
    if path.exists() and not os.access(path, os.W_OK):
        raise Bad(f"output file {value!r} exists and is not writable")
    _writable_folder("folder of output file", path.parent if str(path.parent) else ".")
    return path


def parse_existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise Bad(f"baseline file {value!r} does not exist")
    return path


def parse_run_id(value: str) -> str:
    if not RUN_ID.fullmatch(value or ""):
        raise Bad(f"run id must be a plain folder name of 1..100 letters, digits and _.+=@,- not starting with "
                  f"'.' or '-', got {value!r}")
    return value


OBJECT_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
MODEL_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def _existing(what: str, hint: str):
    def parse(value: str) -> Path:
        path = Path(value)
        if not path.exists():
            raise Bad(f"{what} {value!r} does not exist ({hint})")
        return path
    parse.__name__ = what
    return parse


parse_model_file = _existing("model file", "a .keras or .h5 file, or a SavedModel folder")
parse_data_path = _existing("data", "an .npz file or a folder of class sub-folders of images")


def parse_object_ref(value: str) -> str:
    if not OBJECT_REF.fullmatch(value or ""):
        raise Bad(f"custom objects must be module:name (e.g. mylayers:CUSTOM_OBJECTS), got {value!r}")
    return value


def parse_model_names(value: str) -> tuple:
    names = tuple(dict.fromkeys(n.strip() for n in str(value).split(",") if n.strip()))
    bad = [n for n in names if not MODEL_NAME.fullmatch(n)]
    if not names or bad:
        raise Bad(f"models must be comma-separated model names (lowercase letters, digits, _), got {value!r}")
    return names


parse_max_drop = _number("max drop", 0.0, MAX_PP, " pp")


# -- environment variables -----------------------------------------------------------------------
def env_seconds(name: str, default: float) -> float:
    """A duration from the environment, validated like --qat-timeout; the error names the variable."""
    raw = os.environ.get(name, "")
    return _seconds(name, raw) if raw.strip() else default


def _seconds(name: str, raw: str) -> float:
    try:
        return parse_seconds(raw.strip())
    except Bad:
        raise Bad(f"{name}={raw!r}: must be a finite number of seconds in 1..{MAX_TIMEOUT_S:g}") from None


def _env_path(name: str, kind: str, extra: tuple = ()):
    def check(raw: str) -> None:
        if raw in extra:
            return
        path = Path(raw)
        ok = path.is_file() if kind == "file" else path.is_dir() if kind == "folder" else path.exists()
        if not ok:
            raise Bad(f"{name}={raw!r}: no such {kind}" + (f" (or one of: {', '.join(extra)})" if extra else ""))
    return check


def _cifar10_path(raw: str) -> None:
    """The release's .tar.gz or its folder, whose batch files harness/models/data.py reads whole: a FIFO,
    device or folder there (or as the variable itself) would hang or fail mid-case, so it is refused now."""
    _env_path("QATBENCH_CIFAR10", "file or folder")(raw)
    path = Path(raw)
    batches = sorted(path.rglob("*_batch*")) if path.is_dir() else [path]  # the names the loader reads
    special = next((p for p in batches if not p.is_file()), None)
    if special is not None:
        raise Bad(f"QATBENCH_CIFAR10={raw!r}: {special} is not a regular file (a FIFO, device or folder is "
                  "never read)")


def _env_flag(name: str, allowed: tuple = ("0", "1")):
    def check(raw: str) -> None:
        if raw not in allowed:
            raise Bad(f"{name}={raw!r}: must be {' or '.join(allowed)}")
    return check


ENVIRONMENT = {
    "QATBENCH_WORKER_TIMEOUT": lambda raw: _seconds("QATBENCH_WORKER_TIMEOUT", raw),
    "QATBENCH_LOCK_TIMEOUT": lambda raw: _seconds("QATBENCH_LOCK_TIMEOUT", raw),
    CACHE_ENV: lambda raw: _prefixed(CACHE_ENV, parse_cache_dir, raw),
    "QATBENCH_CIFAR10": _cifar10_path,
    "QATBENCH_FASHION_MNIST": _env_path("QATBENCH_FASHION_MNIST", "folder"),
    "QATBENCH_RESNET50_WEIGHTS": _env_path("QATBENCH_RESNET50_WEIGHTS", "file", ("imagenet",)),
    "QATBENCH_BERT_MINI_WEIGHTS": _env_path("QATBENCH_BERT_MINI_WEIGHTS", "file"),
    "QATBENCH_FAST_FAKEQUANT_GRAD": _env_flag("QATBENCH_FAST_FAKEQUANT_GRAD"),
    "QATBENCH_XLA_FAKEQUANT": _env_flag("QATBENCH_XLA_FAKEQUANT"),
    "QATBENCH_NATIVE_FAKEQUANT": _env_flag("QATBENCH_NATIVE_FAKEQUANT"),
    KERNELS_ENV: lambda raw: _prefixed(KERNELS_ENV, parse_cache_dir, raw),
    # which build of the C++ loops to run (if the CPU has it): for tests and timing, default the widest
    "QATBENCH_NATIVE_ISA": _env_flag("QATBENCH_NATIVE_ISA", ("generic", "avx2", "avx512")),
}


def _prefixed(name: str, parse, raw: str) -> None:
    try:
        parse(raw)
    except Bad as exc:
        raise Bad(f"{name}: {exc}") from None


def check_environment(environ=None) -> None:
    """Raise Bad (one line naming the variable) for the first QATBENCH_* variable with a bad value."""
    environ = os.environ if environ is None else environ
    for name, check in ENVIRONMENT.items():
        raw = environ.get(name)
        if raw is not None and raw != "":
            check(raw)


def check_options(opts) -> None:
    """Options that are each valid but make no sense together (a RunOptions): raise Bad, one line."""
    check_combination(opts.strategy, opts.workers, opts.threads)
    if bool(opts.model_file) != bool(opts.data):
        raise Bad("--qat-model-file and --qat-data go together: the model file is benchmarked on that data")
    for flag, value in (("--qat-custom-objects", opts.custom_objects), ("--qat-max-drop", opts.max_drop),
                        ("--qat-trust-model-file", getattr(opts, "trust_model_file", False) or None)):
        if value is not None and not opts.model_file:
            raise Bad(f"{flag} needs --qat-model-file (it applies to the model loaded from that file)")
    if opts.mixed_budgets and opts.orders and "mixed" not in opts.orders:
        raise Bad("--qat-mixed-budgets needs the mixed order: add mixed to --qat-orders")
    if opts.size_budget is not None and opts.budget is None:
        raise Bad("--qat-size-budget needs --qat-budget")
    if opts.named_run_id and opts.resume and opts.named_run_id != opts.resume:
        raise Bad(f"--qat-run-id {opts.named_run_id} and --qat-resume {opts.resume} name different runs")
    for flag, value in (("--qat-strict-baseline", opts.strict_baseline), ("--qat-drop-tolerance", opts.drop_tolerance)):
        if value not in (None, False) and opts.baseline is None:
            raise Bad(f"{flag} needs --qat-baseline (it changes how a run is gated against a baseline)")


def check_combination(strategy: str, workers: int, threads) -> None:
    """Values that are each fine but make no sense together."""
    if strategy == "default" and workers != 1:
        raise Bad(f"--qat-workers {workers} needs --qat-strategy mirrored or multiworker "
                  "(the default strategy runs on one device)")
    if strategy == "multiworker" and threads and threads * workers > max_threads():
        raise Bad(f"--qat-threads {threads} x --qat-workers {workers} = {threads * workers} threads; at most "
                  f"{max_threads()} ({THREADS_PER_CORE} per core) on this machine")
