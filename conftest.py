"""pytest hooks for qatbench; the logic lives in harness/plugin.py."""

import harness

harness.set_tf_environment()  # before any test module imports TensorFlow (tfmot needs Keras 2)

import pytest  # noqa: E402

from harness import plugin  # noqa: E402
from harness.errors import describe  # noqa: E402

SESSION = pytest.StashKey()


def pytest_addoption(parser):
    plugin.addoption(parser)


def pytest_configure(config):
    config.stash[SESSION] = plugin.QatSession(config)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    node.workerinput["qat_run_id"] = node.config.stash[SESSION].run_id


def pytest_generate_tests(metafunc):
    if "qat_case" in metafunc.fixturenames:
        cases = plugin.cases_for(metafunc.config.stash[SESSION].options)
        metafunc.parametrize("qat_case", cases, ids=[case.id for case in cases])


@pytest.hookimpl(trylast=True)  # after -k / -m deselection: a shard splits the selected cases
def pytest_collection_modifyitems(session, config, items):
    kept, dropped = config.stash[SESSION].select_shard(items)
    if dropped:
        items[:] = kept
        config.hook.pytest_deselected(items=dropped)


def pytest_collection_finish(session):
    session.config.stash[SESSION].collection_finished(session.items)


def pytest_deselected(items):
    # pytest passes no config here; the items carry it
    if items:
        items[0].config.stash[SESSION].deselected(items)


@pytest.fixture
def qat_session(request):
    return request.config.stash[SESSION]


def pytest_sessionfinish(session, exitstatus):
    problem = session.config.stash[SESSION].finish()  # its lines are in .problems, printed below
    if problem and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    qat = config.stash[SESSION]
    try:
        lines = qat.summary_lines()
    except Exception as exc:  # noqa: BLE001 - the problems below must still be printed
        lines = [f"summary failed: {describe(exc)}"]
    lines += [f"problem: {p}" for p in qat.problems]
    if lines:
        terminalreporter.section("qatbench")
        for line in lines:
            terminalreporter.write_line(line)
