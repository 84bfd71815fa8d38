"""The package's layers: no import cycles, and the engine stays below Spark ML's pipeline API.

The layer contracts themselves (engine below the faces, the parameter server below the engine,
utils below everything) are import-linter contracts in ``pyproject.toml``, checked by
``lint-imports`` in CI. Function-level imports count as imports everywhere here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

import elephas

PACKAGE = Path(elephas.__file__).resolve().parent


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("a", "a.b", "a.c", "a.d"):
        graph.add_module(name)
    graph.add_import(importer="a.b", imported="a.c")
    graph.add_import(importer="a.c", imported="a.b")
    graph.add_import(importer="a.d", imported="a.b")
    assert _cycles(graph) == [["a.b", "a.c"]]


def test_no_module_imports_itself_back():
    cycles = _cycles(grimp.build_graph("elephas"))
    assert cycles == [], f"import cycles (module- or function-level): {cycles}"


# Spark ML's column functions and vector types are data conversions; its pipeline API is a face's.
_ALLOWED_SPARK_ML = ("pyspark.ml.functions", "pyspark.ml.linalg")


def _spark_ml_imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [n for n in names if (n == "pyspark.ml" or n.startswith("pyspark.ml.")) and n not in _ALLOWED_SPARK_ML]


def test_the_engine_and_the_layers_below_it_use_no_spark_ml_pipeline_api():
    below = ["engine", "parameter", "collective", "utils"]
    offenders = {
        str(path.relative_to(PACKAGE)): found
        for sub in below
        for path in sorted((PACKAGE / sub).rglob("*.py"))
        if (found := _spark_ml_imports(path))
    }
    assert offenders == {}
