"""What an installed qatbench adds under a name of its own: the ``qatbench`` command and the ``pytest11``
entry point. Both check first that ``harness`` is qatbench's own package, since a project may have a
``harness`` of its own (a common name) that would shadow it. In this repository the folder is
``harness/qatbench``; installed, it is the top-level package ``qatbench`` (pyproject.toml)."""

import importlib.util
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent


def own_harness() -> Path:
    """Where qatbench's ``harness`` is: beside this package when installed, its parent in the repository."""
    return HERE.parent if HERE.parent.name == "harness" and HERE.name == "qatbench" and \
        (HERE.parent / "__init__.py").is_file() else HERE.parent / "harness"


def shadowing_harness() -> Optional[Path]:
    """The folder of another ``harness`` that ``import harness`` would load instead of qatbench's, or None."""
    try:
        found = importlib.util.find_spec("harness")
    except (ImportError, ValueError):
        return None
    locations = list(found.submodule_search_locations or []) if found else []
    if not locations or Path(locations[0]).resolve() == own_harness().resolve():
        return None
    return Path(locations[0])


def shadowed_message(other: Path) -> str:
    return (f"qatbench: another package named 'harness' ({other}) shadows qatbench's ({own_harness()}); "
            "rename that package or run pytest from a folder where it is not importable")
