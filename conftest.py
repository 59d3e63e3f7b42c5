"""pytest hooks for qatbench; the logic lives in harness/plugin.py."""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before anything imports TensorFlow (tfmot needs Keras 2)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # see harness/backend.py

import pytest  # noqa: E402

from harness import plugin  # noqa: E402

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


@pytest.fixture
def qat_session(request):
    return request.config.stash[SESSION]


def pytest_sessionfinish(session, exitstatus):
    problem = session.config.stash[SESSION].finish()
    if problem and session.exitstatus == 0:
        session.config.stash[SESSION].problems.append(problem)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    qat = config.stash[SESSION]
    lines = qat.summary_lines()
    if lines:
        terminalreporter.section("qatbench")
        for line in lines + [f"problem: {p}" for p in qat.problems]:
            terminalreporter.write_line(line)
