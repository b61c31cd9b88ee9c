"""The package's shape (issue 12): no import cycle, no private name imported across modules, one
module a room, and the 0.1 flat import paths still resolving to the same module objects.

Read statically from the source (``ast``): only imports that run when a module is imported count
for cycles (not those inside functions or ``if TYPE_CHECKING:``); every import counts for
private names.
"""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

from pytest_livekit._moved import MOVED_MODULES

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "pytest_livekit"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_imports(tree: ast.Module) -> list[ast.ImportFrom | ast.Import]:
    """Imports that run when the module is imported (module level, also inside try/if)."""
    found: list[ast.ImportFrom | ast.Import] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and not _is_type_checking(node.test):
            pending.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                pending.extend(handler.body)
    return found


def _targets(node: ast.ImportFrom | ast.Import) -> list[str]:
    """The package modules an import statement loads (a ``from pkg import submodule`` too)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in MODULES]
    base = node.module or ""
    out = [base] if base in MODULES else []
    out += [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        edges: set[str] = set()
        for node in _import_time_imports(ast.parse(path.read_text())):
            for target in _targets(node):
                edges.add(target)
                # importing a.b.c runs a/__init__ and a/b/__init__ first
                parts = target.split(".")
                edges.update(".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in MODULES)
        edges.discard(name)
        graph[name] = edges
    return graph


def test_no_module_imports_itself_back_through_others() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_private_name_is_imported_from_another_module() -> None:
    offenders = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pytest_livekit"):
                for alias in node.names:
                    if alias.name.startswith("_") and f"{node.module}.{alias.name}" not in MODULES:
                        offenders.append(f"{name}: from {node.module} import {alias.name}")
    assert offenders == []


def test_every_module_lives_in_a_room_and_the_top_level_stays_small() -> None:
    top = sorted(n for n in MODULES if n.count(".") == 1 and MODULES[n].name != "__init__.py")
    assert len(top) <= 14, top  # plugin, fixtures, config, session, assertions and shared basics
    rooms = {n.split(".")[1] for n in MODULES if n.count(".") >= 2}
    assert rooms == {"agent", "call", "conditions", "metrics", "offline", "outputs", "pytest_run", "server"}


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_a_flat_0_1_import_path_is_the_same_module_at_its_new_home(old: str) -> None:
    moved = importlib.import_module(old)
    new = importlib.import_module(MOVED_MODULES[old])
    assert moved is new
    assert new.__name__ == MOVED_MODULES[old]
    assert new.__spec__ is not None and new.__spec__.name == MOVED_MODULES[old]


@pytest.mark.parametrize(
    ("package", "name", "home"),
    [
        ("pytest_livekit.server", "LivekitServer", "pytest_livekit.server.binary"),
        ("pytest_livekit.call", "LivekitCall", "pytest_livekit.call.livekit_call"),
        ("pytest_livekit.conditions", "Noise", "pytest_livekit.conditions.media"),
        ("pytest_livekit.metrics", "time_to_first_audio", "pytest_livekit.metrics.turns"),
    ],
)
def test_an_old_module_that_became_a_package_still_serves_its_names(package: str, name: str, home: str) -> None:
    assert getattr(importlib.import_module(package), name) is getattr(importlib.import_module(home), name)


def test_a_submodule_wins_over_a_same_named_global_of_the_former_module() -> None:
    from pytest_livekit import call

    assert call.caller.__name__ == "pytest_livekit.call.caller"
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        call.no_such_name  # noqa: B018


def test_the_plugin_module_holds_hooks_only() -> None:
    tree = ast.parse((PACKAGE / "plugin.py").read_text())
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
    assert functions and all(name.startswith("pytest_") for name in functions), functions
