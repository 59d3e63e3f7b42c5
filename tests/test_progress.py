"""Live progress (harness/progress.py): throttled, quiet for short phases, an estimate only once it
means something, erased at the end of the case. Pure: a fake clock."""

from harness import progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def reporter(interval):
    shown, cleared, clock = [], [], Clock()
    return progress.Reporter(shown.append, lambda: cleared.append(True), interval, clock), shown, cleared, clock


def test_a_short_phase_shows_nothing_and_a_long_one_is_throttled():
    rep, shown, cleared, clock = reporter(30.0)
    with progress.reporting(rep, "mlp-last1-w8a8"):
        progress.begin_phase("qat_fit")
        for step in range(1, 151):  # 150 steps in 3 s: shorter than the interval
            clock.now += 0.02
            progress.step(step, 150)
        assert shown == []
        progress.begin_phase("pre-train")
        for step in range(1, 6001):  # 6,000 steps in 120 s: a line about every 30 s
            clock.now += 0.02
            progress.step(step, 6000, per_epoch=400)
    assert 3 <= len(shown) <= 4 and cleared == [True]
    assert shown[0].startswith("mlp-last1-w8a8: pre-train epoch 4/15 (step 1,50")  # 30 s of 0.02 s steps
    assert shown[0].endswith("1 min 30 s left")


def test_no_estimate_from_the_first_steps_and_nothing_outside_a_case():
    rep, shown, _, clock = reporter(0.5)
    progress.step(1, 10)  # no reporter installed: nothing happens
    with progress.reporting(rep, "cnn-first1-w4a8"):
        progress.begin_phase("float_control")
        clock.now += 20.0  # the first step traced the graph
        progress.step(1, 100)
        clock.now += 1.0
        progress.step(50, 100)
    assert shown[0] == "cnn-first1-w4a8: float_control step 1/100"
    assert shown[1] == "cnn-first1-w4a8: float_control step 50/100, 21 s left"
    assert progress.clock_text(3725) == "1 h 02 min"
