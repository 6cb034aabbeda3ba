"""The shape of the code: the core's floors import only downwards, no import cycle, at most five
modules at the core's top, no module over 500 lines, no torch in pages."""

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
CORE = ROOT / "fmnist_core"
# The core's floors, lowest first: a module may import its own floor and those below, never above
# (the README draws the same order). The top (cli, __main__, __init__) may import any floor.
FLOORS = ("base", "data", "models", "engine", "analysis", "training", "store", "runs", "studies", "views")
TOP = {
    "fmnist_core",
    "fmnist_core.cli",
    "fmnist_core.cli_speedrun",
    "fmnist_core.cli_inside",
    "fmnist_core.cli_worker",
    "fmnist_core.__main__",
}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_core_modules(path: Path, known: set[str], root: Path = ROOT) -> set[str]:
    """Every fmnist_core module `path` imports, at the top or inside a function (lazy imports too)."""
    name = module_name(path, root)
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


def core_graph(root: Path = ROOT) -> dict[str, set[str]]:
    paths = sorted((root / "fmnist_core").rglob("*.py"))
    known = {module_name(p, root) for p in paths}
    return {module_name(p, root): imported_core_modules(p, known, root) for p in paths}


def floor(module: str) -> int:
    """The floor's rank (0 lowest); the top's modules rank above every floor."""
    if module in TOP:
        return len(FLOORS)
    return FLOORS.index(module.split(".")[1])


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{name} -> {target}"
        for name, edges in graph.items()
        for target in edges - {"fmnist_core"}  # the package's __init__ loads nothing until asked (PEP 562)
        if floor(target) > floor(name)
    )


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
    assert "fmnist_core.runs.trained" in graph["fmnist_core.runs.jobs"]  # the graph sees real imports
    assert find_cycle(graph) is None, find_cycle(graph)


def test_every_core_module_sits_on_a_floor_and_the_top_holds_at_most_five_others():
    graph = core_graph()
    top_level = {path.name for path in CORE.glob("*.py")} - {"__init__.py", "__main__.py", "cli.py"}
    assert len(top_level) <= 5, top_level
    for name in graph:
        floor(name)  # raises ValueError for a module outside the floors


def test_the_floors_import_only_downwards():
    graph = core_graph()
    assert "fmnist_core.store.cache" in graph["fmnist_core.runs.trained"]  # the graph sees real imports
    assert upward_imports(graph) == []


def test_a_planted_upward_import_is_caught(tmp_path):
    """A lazy import of the job queue planted inside a function of the ground floor's file writer."""
    shutil.copytree(CORE, tmp_path / "fmnist_core", ignore=shutil.ignore_patterns("__pycache__"))
    planted = tmp_path / "fmnist_core" / "base" / "files.py"
    planted.write_text(
        planted.read_text() + "\n\ndef planted():\n    from ..runs import jobs\n\n    return jobs\n"
    )
    assert upward_imports(core_graph(tmp_path)) == [
        "fmnist_core.base.files -> fmnist_core.runs",  # the package, then the module
        "fmnist_core.base.files -> fmnist_core.runs.jobs",
    ]


def test_the_engine_is_applied_by_the_training_loop_alone():
    graph = core_graph()
    users = {
        name for name, edges in graph.items() if any(e.startswith("fmnist_core.engine") for e in edges)
    } - {name for name in graph if name.startswith("fmnist_core.engine")}
    assert users == {"fmnist_core.training.loop"}  # the only caller of the rewrite


# ui/'s floors, lowest first (the README draws them): a module imports its own floor and those
# below it, and app_pages/ sits above them all. ui/ reaches the core directly, every floor but the
# engine (the training loop alone applies it) and the training loop itself (jobs train, pages ask).
UI_FLOORS = (
    ("keys and events", {"keys", "events", "canvas", "warmup"}),
    ("figures and widgets", {"plots", "latent_plots", "unit_plots", "widgets"}),
    ("the process's resources", {"resources"}),
    ("runs, jobs, people, results", {"runs", "jobs", "people", "results"}),
    ("panels and forms", {"panels", "queue_panels", "forms"}),
    ("sections and navigation", {"navigation"}),  # and every page's NAME_sections module
)


def ui_floor(module: str) -> int:
    stem = module.removeprefix("ui.")
    if stem.endswith("_sections"):
        return len(UI_FLOORS) - 1
    for rank, (_name, members) in enumerate(UI_FLOORS):
        if stem in members:
            return rank
    raise ValueError(f"{module} sits on no floor of ui/ (tests/test_layout.py: UI_FLOORS)")


def ui_graph(root: Path = ROOT) -> dict[str, set[str]]:
    paths = sorted((root / "ui").glob("*.py"))
    known = {module_name(p, root) for p in paths}
    return {
        module_name(p, root): imported_core_modules(p, known, root) - {"ui"}
        for p in paths
        if p.stem != "__init__"
    }


def ui_upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{name} -> {target}"
        for name, edges in graph.items()
        for target in edges
        if ui_floor(target) > ui_floor(name)
    )


def test_every_ui_module_sits_on_a_floor_and_they_import_only_downwards_without_a_cycle():
    graph = ui_graph()
    assert "ui.resources" in graph["ui.runs"] and "ui.plots" in graph["ui.unit_plots"]  # real imports seen
    for name in graph:
        ui_floor(name)  # raises ValueError for a module outside the floors
    assert ui_upward_imports(graph) == []
    assert find_cycle(graph) is None, find_cycle(graph)


def test_a_planted_upward_import_in_ui_is_caught(tmp_path):
    """A lazy import of the panels planted inside a function of the ground floor's keys."""
    shutil.copytree(ROOT / "ui", tmp_path / "ui", ignore=shutil.ignore_patterns("__pycache__"))
    planted = tmp_path / "ui" / "keys.py"
    planted.write_text(
        planted.read_text() + "\n\ndef planted():\n    from ui import panels\n\n    return panels\n"
    )
    assert ui_upward_imports(ui_graph(tmp_path)) == ["ui.keys -> ui.panels"]


@pytest.mark.parametrize(
    "path",
    sorted([*(ROOT / "ui").glob("*.py"), *(ROOT / "app_pages").glob("*.py")]),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_the_app_reaches_neither_the_engine_nor_the_training_loop(path):
    known = {module_name(p) for p in CORE.rglob("*.py")}
    reached = imported_core_modules(path, known)
    assert not {m for m in reached if m.startswith(("fmnist_core.engine", "fmnist_core.training.loop"))}


def test_every_module_the_warm_up_imports_exists():
    """The warm-up imports by name and only logs a failure (the page raises it again): a module
    renamed away would leave every first visit cold without a test failing."""
    import importlib.util

    from ui.warmup import HEAVY

    assert [name for name in HEAVY if importlib.util.find_spec(name) is None] == []


@pytest.mark.parametrize("path", sorted((ROOT / "ui").glob("*.py")), ids=lambda p: p.name)
def test_no_ui_module_is_over_300_lines(path):
    assert len(path.read_text().splitlines()) <= 300


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_core_module_is_over_500_lines(path):
    assert len(path.read_text().splitlines()) <= 500


@pytest.mark.parametrize("path", sorted((ROOT / "app_pages").glob("*.py")), ids=lambda p: p.name)
def test_pages_import_no_torch(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            assert not any(alias.name.split(".")[0] == "torch" for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] != "torch"
            assert not (node.module or "").startswith(("fmnist_core.training", "fmnist_core.engine"))


def functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node.end_lineno - node.lineno + 1 + len(node.decorator_list)


# The command line's parser and the reports' declarative tables read best as one list each.
LONG_ALLOWED = {("fmnist_core/cli.py", "build_parser"), ("fmnist_core/studies/reports/s0.py", "entries")}
SHAPED = sorted(p for folder in ("fmnist_core", "ui", "app_pages") for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", SHAPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_is_over_80_lines(path):
    where = str(path.relative_to(ROOT))
    long = [
        (name, lines) for name, lines in functions(path) if lines > 80 and (where, name) not in LONG_ALLOWED
    ]
    assert long == []


@pytest.mark.parametrize("path", sorted((ROOT / "app_pages").glob("*.py")), ids=lambda p: p.name)
def test_every_page_only_lays_out_in_at_most_150_lines(path):
    assert len(path.read_text().splitlines()) <= 150


@pytest.mark.parametrize(
    "path", sorted([*(ROOT / "app_pages").glob("*.py"), *(ROOT / "ui").glob("*.py")]), ids=lambda p: p.name
)
def test_no_page_or_ui_module_names_a_model(path):
    """They ask a model's spec what it can do (ModelSpec.capabilities) instead: adding a model
    touches its file and its registration only."""
    from fmnist_core.models import list_models

    names = set(list_models())
    found = [
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
    ]
    assert found == []


def test_the_page_list_is_the_navigations_and_every_page_file_is_in_it():
    from ui.navigation import PAGES

    listed = {file for file, _title, _icon in PAGES}
    assert listed == {str(p.relative_to(ROOT)) for p in (ROOT / "app_pages").glob("*.py")}
    assert not (ROOT / "pages").exists()  # Streamlit would serve a pages/ folder on its own


def session_keys_written_out(path: Path) -> list[str]:
    """st.session_state keys given as string literals or f-strings (subscripts, get, setdefault, pop)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        key = None
        if isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("session_state"):
            key = node.slice
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "setdefault", "pop")
            and ast.unparse(node.func.value).endswith("session_state")
            and node.args
        ):
            key = node.args[0]
        if isinstance(key, ast.Constant | ast.JoinedStr):
            found.append(ast.unparse(key))
    return found


@pytest.mark.parametrize(
    "path", sorted([*(ROOT / "app_pages").glob("*.py"), *(ROOT / "ui").glob("*.py")]), ids=lambda p: p.name
)
def test_session_keys_are_named_by_ui_keys_alone(path):
    assert session_keys_written_out(path) == []


def test_the_session_key_check_sees_a_literal(tmp_path):
    planted = tmp_path / "page.py"
    planted.write_text(
        'import streamlit as st\nst.session_state["mine"] = 1\nst.session_state.get(f"x:{1}")\n'
    )
    assert session_keys_written_out(planted) == ["'mine'", "f'x:{1}'"]
