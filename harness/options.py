"""Type parsers for the --qat-* options: a bad value fails at parse time with the allowed choices."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .config import MAX_BITS, MIN_BITS, ORDERS, STRATEGIES, TIERS

Bad = argparse.ArgumentTypeError


def _choice(name: str, choices: tuple):
    def parse(value: str) -> str:
        if value not in choices:
            raise Bad(f"unknown {name} {value!r}; choose from: {', '.join(choices)}")
        return value
    parse.__name__ = name
    return parse


parse_tier = _choice("tier", TIERS)
parse_strategy = _choice("strategy", STRATEGIES)


def _int_list(name: str, low: int, high: int | None):
    def parse(value: str) -> tuple:
        items = []
        for raw in value.split(","):
            raw = raw.strip()
            try:
                item = int(raw)
            except ValueError:
                raise Bad(f"{name} must be integers{_range(low, high)}, got {raw!r}") from None
            if item < low or (high is not None and item > high):
                raise Bad(f"{name} must be{_range(low, high)}, got {item}")
            items.append(item)
        if not items:
            raise Bad(f"{name} needs at least one value")
        return tuple(dict.fromkeys(items))
    parse.__name__ = name
    return parse


def _range(low, high):
    return f" in {low}..{high}" if high is not None else f" >= {low}"


parse_bits = _int_list("bits", MIN_BITS, MAX_BITS)
parse_seeds = _int_list("seeds", 0, None)


def parse_orders(value: str) -> tuple:
    orders = tuple(dict.fromkeys(o.strip() for o in value.split(",")))
    for order in orders:
        if order not in ORDERS:
            raise Bad(f"unknown order {order!r}; choose from: {', '.join(ORDERS)}")
    return orders


def parse_methods(value: str) -> tuple:
    from .config import METHODS

    methods = tuple(dict.fromkeys(m.strip() for m in value.split(",")))
    for method in methods:
        if method not in METHODS:
            raise Bad(f"unknown method {method!r}; choose from: {', '.join(METHODS)}")
    return methods


def _int_at_least(name: str, low: int, note: str = ""):
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise Bad(f"{name} must be an integer >= {low}{note}, got {value!r}") from None
        if number < low:
            raise Bad(f"{name} must be >= {low}{note}, got {number}")
        return number
    parse.__name__ = name
    return parse


parse_workers = _int_at_least("workers", 1)
parse_threads = _int_at_least("threads", 0, " (0: TensorFlow's default)")


def parse_nonnegative(name: str):
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise Bad(f"{name} must be a number >= 0, got {value!r}") from None
        if not number >= 0 or number == float("inf"):
            raise Bad(f"{name} must be a finite number >= 0, got {value!r}")
        return number
    parse.__name__ = name
    return parse


parse_budget = parse_nonnegative("budget")
parse_tolerance = parse_nonnegative("tolerance")
parse_timeout = parse_nonnegative("timeout")


def parse_results_dir(value: str) -> Path:
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise Bad(f"results path {value!r} exists and is not a directory")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise Bad(f"results directory {value!r} is not writable ({probe} is not a writable folder)")
    return path


def parse_existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise Bad(f"baseline file {value!r} does not exist")
    return path


def parse_run_id(value: str) -> str:
    if not value or "/" in value or value.startswith("."):
        raise Bad(f"run id must be a plain folder name, got {value!r}")
    return value
