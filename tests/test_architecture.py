"""The shape of the house: pure subpackages import with TensorFlow unimportable, and harness/ has no
import cycle, neither between modules nor between its subpackages."""

import ast
import subprocess
import sys
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "harness"
PURE_PACKAGES = ("design", "results", "analysis")  # every module in them, present and future
PURE_MODULES = ("options", "summary", "session", "session_end", "measure", "progress", "pytest_plugin", "pytest_options",
                "limits", "__main__", "external.register", "external.tiers", "case.paired",
                "distributed.bandwidth")

BLOCK_TF = """
import importlib.abc, sys
class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tf_keras", "tensorflow_model_optimization", "keras"):
            raise ImportError(f"TensorFlow is unimportable in this test: {name}")
sys.meta_path.insert(0, NoTensorFlow())
"""


def module_name(path: Path) -> str:
    parts = path.relative_to(HARNESS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict:
    return {module_name(p): p for p in HARNESS.rglob("*.py")}


def pure_modules() -> list:
    names = [f"harness.{name}" for name in PURE_MODULES]
    names += [name for name in all_modules() if name.split(".")[1:2] and name.split(".")[1] in PURE_PACKAGES]
    return sorted(set(names))


def test_pure_modules_import_with_tensorflow_unimportable():
    names = pure_modules()
    assert len(names) > 20 and "harness.results.records" in names and "harness.analysis.report" in names
    assert "harness.analysis.frontier" in names and "harness.analysis.frontier_report" in names
    code = BLOCK_TF + "".join(f"import {name}\n" for name in names)
    done = subprocess.run([sys.executable, "-c", code], cwd=HARNESS.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_tensorflow_block_works():
    code = BLOCK_TF + "import harness.backend\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=HARNESS.parent, capture_output=True, text=True)
    assert done.returncode != 0 and "unimportable" in done.stderr


def imports_of(path: Path, known: set) -> set:
    """harness modules a module imports, at module level or inside functions (absolute imports only:
    the package uses no relative ones, which test_no_relative_imports keeps true)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("harness"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("harness"))
    return found & known


def import_graph() -> dict:
    modules = all_modules()
    return {name: imports_of(path, set(modules)) - {name} for name, path in modules.items()}


def cycles(graph: dict) -> list:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_relative_imports():
    relative = [name for name, path in all_modules().items()
                if any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(ast.parse(path.read_text())))]
    assert relative == []


def test_no_import_cycle_between_modules():
    graph = import_graph()
    assert len(graph) > 40 and graph["harness.case.pipeline"]
    assert cycles(graph) == []


def test_no_import_cycle_between_subpackages():
    """spec -> models -> case -> distributed, results -> analysis: a subpackage never needs a later one."""
    packages = {}
    for name, imported in import_graph().items():
        package = name.split(".")[1] if name.count(".") >= 2 else name
        targets = {t.split(".")[1] if t.count(".") >= 2 else t for t in imported}
        packages.setdefault(package, set()).update(targets - {package})
    assert cycles(packages) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
