"""The package's structure (issue 15): no module imports, directly or through others, a module that
imports it back — at the top or inside a function. Imports for type checkers only
(``if TYPE_CHECKING:``) do not run, so the first check leaves them out; the second (issue 29)
counts them too, and the modules that string annotations name, since a circle a type checker
has to follow is as much a sign of two modules that each need the other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aevb"


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _annotations(tree: ast.AST) -> list[ast.expr]:
    """Every annotation in ``tree``: of arguments, returns and annotated assignments."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            found += [
                argument.annotation
                for argument in (
                    *arguments.posonlyargs,
                    *arguments.args,
                    *arguments.kwonlyargs,
                    arguments.vararg,
                    arguments.kwarg,
                )
                if argument is not None and argument.annotation is not None
            ]
            if node.returns is not None:
                found.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
    return found


def _named_in_string_annotations(tree: ast.AST, modules: set[str], package: str) -> set[str]:
    """The modules that string annotations name by their dotted path (``"aevb.models.vae.VAE"``):
    a type checker imports them though the code never does."""
    named = set()
    for annotation in _annotations(tree):
        for node in ast.walk(annotation):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for dotted in re.findall(rf"\b{package}(?:\.\w+)+", node.value):
                    parts = dotted.split(".")
                    for end in range(len(parts), 0, -1):  # the longest prefix that is a module
                        if ".".join(parts[:end]) in modules:
                            named.add(".".join(parts[:end]))
                            break
    return named


def import_graph(package: Path = PACKAGE, type_only: bool = False) -> dict[str, set[str]]:
    """The package's modules → the package's modules each imports when it runs (relative imports,
    as aevb uses); with ``type_only``, also those it imports for type checkers alone
    (``if TYPE_CHECKING:``) and those its string annotations name."""
    paths = {_module_name(path, package): path for path in package.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text())
        within = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        type_checking = {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for node in ast.walk(block)
        }
        imported = set()
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.level or (id(node) in type_checking and not type_only):
                continue
            base = within.split(".")[: len(within.split(".")) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            submodules = {f"{target}.{alias.name}" for alias in node.names} & set(paths)
            imported |= submodules
            if len(submodules) < len(node.names) and target in paths:
                imported.add(target)
        if type_only:
            imported |= _named_in_string_annotations(tree, set(paths), package.name)
        # Importing a.b.c runs a/__init__ and a/b/__init__ first, unless they are this module's
        # own packages, which are already running when it is imported.
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        imported |= {
            parent for module in imported for parent in _parents(module) if parent in paths and parent not in own
        }
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


def test_no_circle_even_through_type_only_imports():
    """A module that needs another's types while that one needs its code is one module split in
    two, or a type in the wrong place: the circle counts though one of its imports never runs."""
    runtime, graph = import_graph(), import_graph(type_only=True)
    assert all(runtime[module] <= graph[module] for module in runtime)
    assert circles(graph) == []


def test_type_only_imports_and_string_annotations_make_circles_too(tmp_path):
    """The checker itself: a circle closed by an import under TYPE_CHECKING (a → b → a) or by a
    string annotation naming a module (c → d → c) counts only in the type-only graph."""
    package = tmp_path / "pkg"
    package.mkdir()
    for name, text in {
        "__init__": "",
        "a": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n",
        "b": "from .a import A\n",
        "c": 'def f(thing: "pkg.d.Thing") -> None: ...\n',
        "d": "from . import c\n",
    }.items():
        (package / f"{name}.py").write_text(text)
    assert circles(import_graph(package)) == []
    assert import_graph(package, type_only=True)["pkg.c"] == {"pkg.d"}
    assert sorted(circles(import_graph(package, type_only=True))) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"]]


def test_every_name_a_module_exports_exists():
    """``__all__`` lists only names the module defines or imports (``from m import *`` would fail)."""
    import importlib

    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":  # runs the command line when imported
            continue
        module = importlib.import_module(_module_name(path))
        missing += [f"{module.__name__}.{name}" for name in getattr(module, "__all__", ()) if not hasattr(module, name)]
    assert missing == []


def test_a_lazy_package_shows_type_checkers_every_name_it_imports_on_first_use():
    """A subpackage whose names are imported on first use (``_LAZY``, PEP 562) imports the same names
    from the same modules under ``if TYPE_CHECKING:``, which type checkers and the API reference
    read: neither runs ``__getattr__``. (Not aevb itself: its modules import its ``__version__``, so
    its type-only imports of them would be circles; docs/reference/aevb.md links its names.)"""
    import importlib

    lazy_packages = [path for path in sorted(PACKAGE.rglob("*/__init__.py")) if "_LAZY" in path.read_text()]
    assert len(lazy_packages) >= 2  # aevb.models and aevb.training at least
    for path in lazy_packages:
        module = importlib.import_module(_module_name(path))
        if not isinstance(getattr(module, "_LAZY", None), dict):
            continue
        type_only = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
                for statement in node.body:
                    if isinstance(statement, ast.ImportFrom):
                        type_only.update({alias.name: statement.module for alias in statement.names})
        assert type_only == dict(module._LAZY), module.__name__
