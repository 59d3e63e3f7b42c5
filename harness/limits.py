"""A per-case wall-clock limit. Pure Python (SIGALRM), no TensorFlow."""

from __future__ import annotations

import contextlib
import signal
import threading


class CaseTimeout(TimeoutError):
    """A case ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise CaseTimeout in the main thread after ``seconds`` (0 or None: no limit).

    TensorFlow ops in C++ are not interrupted: the exception fires at the next Python step,
    so a limit is exact to within one train step or conversion."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise CaseTimeout(f"case exceeded its time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
