"""The ``pytest11`` entry point of an installed qatbench (pyproject.toml). Its module name cannot
collide with a project's own packages; it loads qatbench's hooks (harness/pytest_plugin.py) only when
``harness`` is qatbench's. If another ``harness`` shadows it, pytest keeps working for everything else,
and a --qat-* option on the command line is one usage line that says so."""

import pytest

from qatbench import shadowed_message, shadowing_harness

_OTHER = shadowing_harness()

if _OTHER is None:
    from harness.pytest_plugin import *  # noqa: F401,F403 - the hooks and fixtures, registered under this entry point
else:
    def pytest_load_initial_conftests(early_config, parser, args):
        if any(str(arg).startswith("--qat-") for arg in args):
            raise pytest.UsageError(shadowed_message(_OTHER))
