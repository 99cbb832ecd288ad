"""No import cycles among the product's modules, imports inside functions included.

import-linter checks the rooms (layers, forbidden imports); this test checks what it cannot: that no
module reaches back to one that imports it, even lazily from inside a function.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("app", "worker", "tov_engine", "tov_client", "tov_formats", "tov_plan")


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the product packages."""
    found: dict[str, Path] = {}
    for package in PRODUCT:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imported_names(module: str, path: Path) -> list[str]:
    """Every dotted name a module imports, wherever the import statement stands."""
    is_package = path.name == "__init__.py"
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb from the module's own package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the product modules it imports (minus a package's imports of its own children)."""
    files = module_files()
    graph: dict[str, set[str]] = {name: set() for name in files}
    for module, path in files.items():
        for name in imported_names(module, path):
            while name and name not in files:  # `from pkg.mod import func` -> pkg.mod
                name = name.rpartition(".")[0]
            if name and name != module and not name.startswith(module + "."):
                graph[module].add(name)
    return graph


def test_the_graph_sees_the_product() -> None:
    graph = import_graph()
    assert {"app.main", "worker.tasks", "tov_engine.cli", "tov_client.cli"} <= graph.keys()
    assert "tov_engine.config" in graph["tov_engine.cli"]


def test_a_cycle_would_be_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()


def test_no_import_cycles() -> None:
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        pytest.fail(f"import cycle among the product's modules: {cycle}")
