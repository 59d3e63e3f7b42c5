"""The shape of the house: pure modules import with TensorFlow unimportable, and harness/ has no import cycle."""

import ast
import subprocess
import sys
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "harness"
PURE = ("config", "registry", "units", "select", "size", "records", "paired", "seedstats", "baseline", "gate",
        "checks", "compare", "forms", "fit", "plan", "grid", "rerun", "summary", "options", "report", "plugin",
        "__main__", "runner")

BLOCK_TF = """
import importlib.abc, sys
class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tf_keras", "tensorflow_model_optimization", "keras"):
            raise ImportError(f"TensorFlow is unimportable in this test: {name}")
sys.meta_path.insert(0, NoTensorFlow())
"""


def test_pure_modules_import_with_tensorflow_unimportable():
    code = BLOCK_TF + "".join(f"import harness.{name}\n" for name in PURE)
    done = subprocess.run([sys.executable, "-c", code], cwd=HARNESS.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_tensorflow_block_works():
    code = BLOCK_TF + "import harness.backend\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=HARNESS.parent, capture_output=True, text=True)
    assert done.returncode != 0 and "unimportable" in done.stderr


def imports_of(path: Path) -> set:
    """harness modules a module imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("harness."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("harness."))
    return found


def cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
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


def test_no_import_cycle_in_harness():
    modules = {p.stem for p in HARNESS.glob("*.py")}
    graph = {p.stem: imports_of(p) & modules - {p.stem} for p in HARNESS.glob("*.py")}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
