"""The shape of the code: no import cycle in the core, no module over 500 lines, no torch in pages."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
CORE = ROOT / "fmnist_core"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_core_modules(path: Path, known: set[str]) -> set[str]:
    """Every fmnist_core module `path` imports, at the top or inside a function (lazy imports too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            stem = node.module or ""
            origin = f"{base}.{stem}".strip(".") if node.level else stem
            # `from . import kernels` names a module; `from .x import name` names module x
            targets = [f"{origin}.{alias.name}" for alias in node.names] + [origin]
        else:
            continue
        found |= {target for target in targets if target in known}
    return found - {name}


def core_graph() -> dict[str, set[str]]:
    paths = sorted(CORE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imported_core_modules(p, known) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, path.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                return path[path.index(child) :] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        state[node], _ = 2, path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_core():
    graph = core_graph()
    # The package's __init__ re-exports; a submodule importing its own package's __init__ is
    # what Python does anyway, so those edges are left out.
    for name, edges in graph.items():
        graph[name] = {e for e in edges if not name.startswith(e + ".")}
    assert "fmnist_core.runs" in graph["fmnist_core.jobs"]  # the graph sees real imports
    assert find_cycle(graph) is None, find_cycle(graph)


def test_the_models_and_the_cache_know_nothing_of_the_engine_or_the_runs():
    graph = core_graph()
    for name, edges in graph.items():
        if name.startswith("fmnist_core.models") or name == "fmnist_core.cache":
            assert not {e for e in edges if e.startswith(("fmnist_core.engine", "fmnist_core.runs"))}, name
    users = {name for name, edges in graph.items() if "fmnist_core.engine" in edges and "engine" not in name}
    assert users == {"fmnist_core.training"}  # the only caller of the rewrite


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_core_module_is_over_500_lines(path):
    assert len(path.read_text().splitlines()) <= 500


@pytest.mark.parametrize("path", sorted((ROOT / "pages").glob("*.py")), ids=lambda p: p.name)
def test_pages_import_no_torch(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            assert not any(alias.name.split(".")[0] == "torch" for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] != "torch"
            assert node.module not in ("fmnist_core.training", "fmnist_core.engine")
