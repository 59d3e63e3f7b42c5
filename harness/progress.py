"""Live progress of a case's long phases: which case, which phase, step or epoch of total, time left.

The pipeline reports through module-level calls (``phase``, ``step``) that do nothing unless a
reporter is installed; the pytest layer installs one per case (harness/pytest_plugin.py). On a
terminal one status line is rewritten in place and erased when the case ends; in a log (no terminal)
a line at most every LOG_INTERVAL_S, so a long pre-training is visible without flooding CI logs.
Pure Python: no TensorFlow, no pytest.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Optional

TTY_INTERVAL_S = 0.5
LOG_INTERVAL_S = 30.0
ETA_MIN_STEPS, ETA_MIN_S = 10, 3.0


class Reporter:
    """Formats progress and hands it to ``show(text)`` (rewrite the status) / ``clear()``, throttled."""

    def __init__(self, show: Callable[[str], None], clear: Callable[[], None], interval_s: float,
                 clock=time.monotonic):
        self.show, self.clear, self.interval_s, self.clock = show, clear, interval_s, clock
        self.case, self.label, self.phase_start, self.last_shown = "", "", 0.0, None

    def begin_phase(self, label: str) -> None:
        self.label, self.phase_start = label, self.clock()

    def step(self, done: int, total: int, per_epoch: int = 0) -> None:
        now = self.clock()
        since = self.phase_start if self.last_shown is None or self.last_shown < self.phase_start else self.last_shown
        if now - since < self.interval_s:  # a phase shorter than the interval shows nothing
            return
        self.last_shown = now
        self.show(describe(self.case, self.label, done, total, per_epoch, now - self.phase_start))


def describe(case: str, label: str, done: int, total: int, per_epoch: int, elapsed_s: float) -> str:
    """``cnn-last3-w8a8: pre-train epoch 3/15 (step 1,200/6,000), 2 min 10 s left``."""
    if per_epoch > 0:
        epochs = -(-total // per_epoch)
        where = f"epoch {min(epochs, done // per_epoch + 1)}/{epochs} (step {done:,}/{total:,})"
    else:
        where = f"step {done:,}/{total:,}"
    left = ""
    if ETA_MIN_STEPS <= done < total and elapsed_s >= ETA_MIN_S:  # the first steps include tracing: no estimate
        left = f", {clock_text(elapsed_s / done * (total - done))} left"
    return f"{case}: {label or 'train'} {where}{left}"


def clock_text(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


_current: Optional[Reporter] = None


def begin_phase(label: str) -> None:
    if _current is not None:
        _current.begin_phase(label)


def step(done: int, total: int, per_epoch: int = 0) -> None:
    if _current is not None:
        _current.step(done, total, per_epoch)


@contextlib.contextmanager
def reporting(reporter: Optional[Reporter], case: str = ""):
    """Install ``reporter`` (None: stay silent) for one case; its status is erased at the end."""
    global _current
    previous, _current = _current, reporter
    if reporter is not None:
        reporter.case, reporter.last_shown, reporter.phase_start = case, None, reporter.clock()
    try:
        yield reporter
    finally:
        _current = previous
        if reporter is not None and reporter.last_shown is not None:
            reporter.clear()
