"""qatbench's pytest hooks: a thin layer over the session object (harness/session.py).

Registered once: by the ``pytest11`` entry point of an installed qatbench (through
harness/qatbench/pytest_plugin.py, which first checks that ``harness`` is qatbench's own), or by this
repository's conftest.py; both register it under this module's name, so its options exist once.

Light until a qatbench case is in play: a pytest run that collects no case gets no environment
variable, no TensorFlow or scipy import, no signal handler and no warning filter from qatbench. The
session is built when the options ask for qatbench, when a project registers models, or when pytest
generates the first case.
"""

import contextlib
import dataclasses
from pathlib import Path

import pytest

from harness import hookspecs, pytest_options

SESSION = pytest.StashKey()
START_ERROR = pytest.StashKey()  # a usage error met when the first case was generated
RUN_ID = pytest.StashKey()  # an xdist controller's run id, given to workers before any session exists
MARKER = "qatbench"
SUITE = Path(__file__).with_name("suite") / "test_qat.py"
# The packaged suite's node id when it is collected from outside the rootdir (an installed qatbench):
# pytest would give it none (``::test_qat_case[...]``); with it, a case's node id selects that case.
SUITE_NODE = "qatbench/test_qat.py"


def pytest_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser):
    pytest_options.addoption(parser)


def pytest_configure(config):
    config.addinivalue_line("markers", f"{MARKER}: a qatbench benchmark case (deselect: -m 'not {MARKER}' or --qat-skip)")
    from harness.external import register

    try:
        outside = register.register_hooked(config)
    except register.BAD_INPUT as exc:
        from harness.errors import one_line

        raise pytest.UsageError(one_line(exc)) from None
    _route_suite_node_ids(config)
    asked = pytest_options.run_options(config) != pytest_options.default_run_options()
    config.pluginmanager.register(_CaseWatch(config), "qatbench-case-watch")
    if asked or outside:
        session_of(config)  # bad options or inputs are one usage line now, before anything is collected
    if outside:
        _collect_suite_for_outside_models(config, outside)


def session_of(config):
    """The session object, built on first use."""
    found = config.stash.get(SESSION, None)
    if found is None:
        from harness.session import QatSession

        found = config.stash[SESSION] = QatSession(config, run_id=config.stash.get(RUN_ID, None))
    return found


def _built(config):
    return config.stash.get(SESSION, None)


def _route_suite_node_ids(config) -> None:
    """``qatbench/test_qat.py::test_qat_case[...]`` on the command line names the packaged suite
    (unless the project has such a file): pytest is pointed at the file, the selection part kept."""
    for i, arg in enumerate(config.args):
        path, sep, rest = str(arg).partition("::")
        if path == SUITE_NODE and not (Path(config.invocation_params.dir) / path).exists():
            config.args[i] = str(SUITE) + sep + rest


def _collect_suite_for_outside_models(config, outside) -> None:
    """In a project that registers its own models and runs plain ``pytest`` (no paths given), collect
    the packaged benchmark module too, for those models only unless --qat-models names others;
    explicit paths are left as given."""
    if config.args_source != pytest.Config.ArgsSource.ARGS and str(SUITE) not in config.args:
        config.args.append(str(SUITE))
        qat = session_of(config)
        if not qat.options.models:
            qat.options = dataclasses.replace(qat.options, models=outside)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path, parent):
    if Path(module_path) == SUITE and not Path(module_path).is_relative_to(parent.config.rootpath):
        return pytest.Module.from_parent(parent, path=Path(module_path), nodeid=SUITE_NODE)
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    config = node.config
    if RUN_ID not in config.stash:
        from harness.results.records import new_run_id

        built = _built(config)
        config.stash[RUN_ID] = built.run_id if built else (pytest_options.run_options(config).run_id or new_run_id())
    node.workerinput["qat_run_id"] = config.stash[RUN_ID]


def pytest_generate_tests(metafunc):
    if "qat_case" in metafunc.fixturenames:
        try:
            qat = session_of(metafunc.config)
        except pytest.UsageError as exc:  # raised after collection (a collector would make it a collection error)
            metafunc.config.stash[START_ERROR] = exc
            metafunc.parametrize("qat_case", [])
            return
        from harness.design.grid import cases_for

        cases = cases_for(qat.options)
        metafunc.parametrize("qat_case", cases, ids=[case.id for case in cases])


def is_case(item) -> bool:
    return item.get_closest_marker(MARKER) is not None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    """A usage error met while collecting (one line, exit 4); --qat-skip / --qat-only, before -k and -m."""
    if START_ERROR in config.stash:
        raise config.stash[START_ERROR]
    skip, only = config.getoption("qat_skip"), config.getoption("qat_only")
    if skip or only:
        kept = [item for item in items if is_case(item) == only]
        dropped = [item for item in items if is_case(item) != only]
        if dropped:
            items[:] = kept
            config.hook.pytest_deselected(items=dropped)


@pytest.hookimpl(trylast=True, specname="pytest_collection_modifyitems")
def pytest_collection_modifyitems_after_deselection(session, config, items):
    """After -k / -m deselection: one item per case, then this shard's share of them."""
    qat = _built(config)
    if qat is None:
        return
    items[:] = _once_per_case(items)
    kept, dropped = qat.select_shard(items)
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
    qat = _built(session.config)
    if qat is not None:
        qat.collection_finished(session.items)


def pytest_deselected(items):
    # pytest passes no config here; the items carry it
    qat = _built(items[0].config) if items else None
    if qat is not None:
        qat.deselected(items)


class _CaseWatch:
    """An xdist controller collects nothing: the first case a worker reports builds its session, whose
    session end (merge, gate, report) and SIGTERM handling are the controller's job."""

    def __init__(self, config):
        self.config = config

    def pytest_runtest_logreport(self, report):
        if MARKER in report.keywords and _built(self.config) is None:
            session_of(self.config)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session):
        """Before xdist's own session end, which waits for its workers to exit: a SIGTERM there used to be a
        KeyboardInterrupt out of execnet, and no records.jsonl or report. From here on it waits for them."""
        qat = _built(self.config)
        if qat is not None and not qat.is_worker:
            qat.finishing = True


@pytest.fixture
def qat_session(request):
    return session_of(request.config)


@pytest.fixture
def qat_progress(request):
    """A case's long phases report their progress (harness/progress.py) to the terminal while it runs."""
    from harness import progress

    case = request.node.callspec.params["qat_case"].id if hasattr(request.node, "callspec") else request.node.name
    with progress.reporting(_progress_reporter(request.config), case):
        yield


def _progress_reporter(config):
    """On unless --qat-progress off, -q (auto), an xdist worker (it has no terminal) or no reporter."""
    from harness import progress

    mode, terminal = config.getoption("qat_progress"), config.pluginmanager.get_plugin("terminalreporter")
    if mode == "off" or terminal is None or hasattr(config, "workerinput"):
        return None
    if mode == "auto" and config.get_verbosity() < 0:
        return None
    capture = config.pluginmanager.get_plugin("capturemanager")
    uncaptured = capture.global_and_fixture_disabled if capture is not None else contextlib.nullcontext
    writer = terminal._tw
    if not getattr(getattr(writer, "_file", None), "isatty", lambda: False)():
        def log(text):
            with uncaptured():
                terminal.write_line(f"qatbench: {text}")
        return progress.Reporter(log, lambda: None, progress.LOG_INTERVAL_S)
    return progress.Reporter(*_status_line(writer, uncaptured), progress.TTY_INTERVAL_S)


def _status_line(writer, uncaptured) -> tuple:
    """show/clear of one status line rewritten in place; pytest's own line (its dots) is put back."""
    state = {"saved": None, "width": 0}

    def show(text):
        with uncaptured():
            if state["saved"] is None:
                state["saved"] = getattr(writer, "_current_line", "")
            text = text[:max(20, writer.fullwidth - 1)]
            writer.write("\r" + text.ljust(state["width"]), flush=True)
            state["width"] = len(text)

    def clear():
        with uncaptured():
            writer.write("\r" + " " * state["width"] + "\r" + (state["saved"] or ""), flush=True)
            if hasattr(writer, "_current_line"):
                writer._current_line = state["saved"] or ""
            state["saved"], state["width"] = None, 0
    return show, clear


def pytest_sessionfinish(session, exitstatus):
    qat = _built(session.config)
    if qat is None:
        return
    problem = qat.finish()  # its lines are in .end.problems, printed below
    if problem and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    qat = _built(config)
    if qat is None:
        return
    from harness.errors import describe

    try:
        lines = qat.summary_lines()
    except Exception as exc:  # noqa: BLE001 - the problems below must still be printed
        lines = [f"summary failed: {describe(exc)}"]
    lines += [f"problem: {p}" for p in qat.end.problems]
    if lines:
        terminalreporter.section("qatbench")
        for line in lines:
            terminalreporter.write_line(line)
