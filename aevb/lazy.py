"""Names a package imports on first use (PEP 562): the package stays cheap to import, so that the
command line can answer ``--help`` before torch is loaded, and the console script can catch a
Ctrl-C pressed while it loads."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_names(package: str, modules: Mapping[str, str], namespace: dict) -> Callable[[str], object]:
    """The module ``__getattr__`` of ``package``: name → the attribute of that name in the submodule
    ``modules[name]`` (relative to ``package``), imported on first use and kept in ``namespace`` (the
    package's globals) so that it is looked up only once."""

    def __getattr__(name: str):
        if name in modules:
            value = getattr(importlib.import_module(f".{modules[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
