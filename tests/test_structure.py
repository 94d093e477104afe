"""The package's structure (issue 15): no module imports, directly or through others, a module that
imports it back — at the top or inside a function. Imports for type checkers only
(``if TYPE_CHECKING:``) do not run and do not count."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aevb"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """aevb's modules → the aevb modules each imports when it runs (relative imports, as aevb uses)."""
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text())
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        type_checking = {id(node) for block in ast.walk(tree)
                         if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                         for node in ast.walk(block)}
        imported = set()
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.level or id(node) in type_checking:
                continue
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            submodules = {f"{target}.{alias.name}" for alias in node.names} & set(paths)
            imported |= submodules
            if len(submodules) < len(node.names) and target in paths:
                imported.add(target)
        # Importing a.b.c runs a/__init__ and a/b/__init__ first, unless they are this module's
        # own packages, which are already running when it is imported.
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        imported |= {parent for module in imported for parent in _parents(module)
                     if parent in paths and parent not in own}
        graph[name] = imported - {name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_the_checker_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    assert {"aevb.models.vae", "aevb.training", "aevb.runs.train"} <= set(graph)
    assert circles(graph) == []


def test_every_name_a_module_exports_exists():
    """``__all__`` lists only names the module defines or imports (``from m import *`` would fail)."""
    import importlib

    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":   # runs the command line when imported
            continue
        module = importlib.import_module(_module_name(path))
        missing += [f"{module.__name__}.{name}" for name in getattr(module, "__all__", ()) if not hasattr(module, name)]
    assert missing == []
