"""The house's shape, checked from the source: no import cycle, no import up from the library to a
command, no room too big to read. Read with ``ast`` (nothing is imported), so it costs milliseconds."""

from __future__ import annotations

import ast
import graphlib
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "raymlops"
# Entry points on the top floor: the library never imports them (they import the library).
ENTRY_POINTS = ("raymlops.cli", "raymlops.job", "raymlops.__main__")
MAX_MODULE_LINES = 600
MAX_APP_LINES = 450


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module an import names (``raymlops.a.b.func`` -> ``raymlops.a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _is_main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":``: the module run as a command, an entry point of its own."""
    return isinstance(node, ast.If) and ast.unparse(node.test) in ("__name__ == '__main__'",)


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every raymlops module ``path`` imports, at module level or inside a function (a lazy import is
    still a dependency: it only moves the failure to run time). ``if TYPE_CHECKING:`` blocks are not, nor
    a module's ``if __name__ == "__main__":`` block (run as a command, it is an entry point)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if _is_type_checking(node) or _is_main_guard(node)
        for child in ast.walk(node)
    }
    found: set[str | None] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(_resolve(alias.name, modules) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(_resolve(node.module, modules))
            # ``from raymlops.x import y`` where y is a module: a dependency on x.y as well.
            submodules = (f"{node.module}.{alias.name}" for alias in node.names)
            found.update(sub for sub in submodules if sub in modules)
    return {dep for dep in found if dep and dep.startswith("raymlops") and dep != name}


@cache
def _graph() -> dict[str, frozenset[str]]:
    modules = _modules()
    return {name: frozenset(_imports(name, path, modules)) for name, path in modules.items()}


def test_no_import_cycle() -> None:
    graph = {name: set(deps) for name, deps in _graph().items()}
    cycles = []
    while True:  # collect every cycle, not only the first, so one run lists all the work
        try:
            graphlib.TopologicalSorter(graph).prepare()
            break
        except graphlib.CycleError as exc:
            cycle = exc.args[1]
            cycles.append(" -> ".join(cycle))
            graph[cycle[1]].discard(cycle[0])  # graphlib lists the cycle backwards: cycle[1] imports cycle[0]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _is_entry_point(name: str) -> bool:
    return any(name == entry or name.startswith(entry + ".") for entry in ENTRY_POINTS)


def test_library_never_imports_a_command() -> None:
    upward = {
        f"{name} -> {dep}"
        for name, deps in _graph().items()
        if not _is_entry_point(name)
        for dep in deps
        if _is_entry_point(dep)
    }
    assert not upward, "library modules importing a command or entry point:\n" + "\n".join(sorted(upward))


def test_the_cycle_check_sees_a_cycle(tmp_path: Path) -> None:
    """The checker itself can fail: two modules importing each other (one lazily) are found."""
    (tmp_path / "a.py").write_text("import raymlops.b\n")
    (tmp_path / "b.py").write_text("def f():\n    from raymlops.a import x\n")
    modules = {"raymlops.a": tmp_path / "a.py", "raymlops.b": tmp_path / "b.py"}
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_is_small(name: str) -> None:
    limit = MAX_APP_LINES if name == "raymlops.serving.app" else MAX_MODULE_LINES
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= limit, f"{name} has {lines} lines (at most {limit}): split it by responsibility"
