"""The library stands on its own: no module under tensorcache/ imports the driver (nas_integration), and
tensorcache's modules import each other without a cycle (imports inside functions count; imports only for
type checkers do not)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY, DRIVER = "tensorcache", "nas_integration"


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package) for every module of the library."""
    out = {}
    for path in sorted((ROOT / LIBRARY).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def imported(name: str, path: Path, package: bool, known: set[str]) -> set[str]:
    """Every module ``name`` imports, absolute (``from a import b`` names ``a.b`` when that is a module)."""
    base = name.split(".") if package else name.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # names for type checkers only: never imported at run time
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                parent = ".".join(base[:len(base) - child.level + 1] + [child.module or ""]).strip(".") \
                    if child.level else child.module or ""
                found.update(f"{parent}.{a.name}" if f"{parent}.{a.name}" in known else parent for a in child.names)
            elif isinstance(child, ast.Call) and ast.unparse(child.func) in ("import_module", "importlib.import_module",
                                                                           "__import__"):
                found.update(arg.value for arg in child.args[:1] if isinstance(arg, ast.Constant)
                             and isinstance(arg.value, str))
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imported(name, path, package, set(mods)) for name, (path, package) in mods.items()}


def test_the_library_never_imports_the_driver():
    graph = import_graph()
    assert len(graph) > 40  # the walk found the library
    upward = {name: sorted(m for m in found if m == DRIVER or m.startswith(DRIVER + "."))
              for name, found in graph.items()}
    assert {name: found for name, found in upward.items() if found} == {}


def test_the_walk_sees_imports_inside_functions_but_not_those_for_type_checkers(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import nas_integration.a\n"
                    "def f():\n    from nas_integration.b import c\n    importlib.import_module('nas_integration.d')\n")
    assert imported("tensorcache.m", path, False, set()) >= {"nas_integration.b", "nas_integration.d"}
    assert "nas_integration.a" not in imported("tensorcache.m", path, False, set())


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles a depth-first walk meets, each as the path that closes it."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    found: list[list[str]] = []

    def walk(name: str) -> None:
        state[name] = 1
        path.append(name)
        for other in sorted(graph[name]):
            if state.get(other) == 1:
                found.append(path[path.index(other):] + [other])
            elif other not in state:
                walk(other)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)
    return found


def test_the_library_has_no_import_cycle():
    graph = import_graph()
    graph = {name: {m for m in found if m in graph and m != name} for name, found in graph.items()}
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]  # the walk finds one
