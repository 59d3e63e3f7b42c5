"""qatbench's pytest hooks: thin wiring over harness/session.py's session object.

Loaded once: through the ``pytest11`` entry point when qatbench is installed (pip install .), or
through this repository's conftest.py (``pytest_plugins``); both use this module's name, so pytest
registers it, and its options, only once."""

import harness

harness.set_tf_environment()  # before any test module imports TensorFlow (tfmot needs Keras 2)

import dataclasses  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from harness import hookspecs  # noqa: E402
from harness import session as session_module  # noqa: E402
from harness.errors import describe  # noqa: E402
from harness.design import registry  # noqa: E402

SESSION = pytest.StashKey()
SUITE = Path(__file__).with_name("suite") / "test_qat.py"


def pytest_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser):
    session_module.addoption(parser)


def pytest_configure(config):
    config.stash[SESSION] = session_module.QatSession(config)
    _collect_suite_for_outside_models(config)


def _collect_suite_for_outside_models(config) -> None:
    """In a project that registers its own models and runs plain ``pytest`` (no paths given), collect
    the packaged benchmark module too, for those models only unless --qat-models names others;
    explicit paths are left as given."""
    outside = registry.outside_models()
    if outside and config.args_source != pytest.Config.ArgsSource.ARGS and str(SUITE) not in config.args:
        config.args.append(str(SUITE))
        session = config.stash[SESSION]
        if not session.options.models:
            session.options = dataclasses.replace(session.options, models=outside)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    node.workerinput["qat_run_id"] = node.config.stash[SESSION].run_id


def pytest_generate_tests(metafunc):
    if "qat_case" in metafunc.fixturenames:
        cases = session_module.cases_for(metafunc.config.stash[SESSION].options)
        metafunc.parametrize("qat_case", cases, ids=[case.id for case in cases])


@pytest.hookimpl(trylast=True)  # after -k / -m deselection: a shard splits the selected cases
def pytest_collection_modifyitems(session, config, items):
    items[:] = _once_per_case(items)
    kept, dropped = config.stash[SESSION].select_shard(items)
    if dropped:
        items[:] = kept
        config.hook.pytest_deselected(items=dropped)


def _once_per_case(items) -> list:
    """The packaged suite and a repository's own test module may both yield a case: keep the first."""
    seen, kept = set(), []
    for item in items:
        case = getattr(item, "callspec", None) and item.callspec.params.get("qat_case")
        if case is not None:
            if case.id in seen:
                continue
            seen.add(case.id)
        kept.append(item)
    return kept


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
