"""Training engines: how Algorithm 1's gradient is computed, behind one seam (:mod:`.base`).

* ``native`` (:mod:`.native`): hand-derived gradients with the elementwise work in C and the
  optimiser (Adagrad, Adam) inside the step; a CPU in float32. The fastest where it serves.
* ``fused`` (:mod:`.fused`): the same gradients in torch operations with preallocated buffers;
  any device and dtype.
* ``autograd`` (:mod:`.autograd`): ``loss.backward()`` on the objective; every model and
  objective, and the reference the others are tested against.

:func:`select_engine` is the one place that decides: it returns the engine asked for, or with
``auto`` the first of :data:`AUTO_ORDER` that can serve, or raises with the reason it cannot.
A new engine is one module with an :class:`~.base.Engine` subclass, registered in :data:`ENGINES`.
"""

from __future__ import annotations

from ..choices import AUTO_ENGINE
from ..errors import AevbError
from .autograd import AutogradEngine
from .base import Engine, EngineRequest, Gradient, Objective
from .fused import FusedEngine
from .native import NativeEngine

#: Engines by their ``engine`` setting.
ENGINES: dict[str, type[Engine]] = {engine.name: engine for engine in (NativeEngine, FusedEngine, AutogradEngine)}

#: What ``auto`` tries, fastest first; autograd serves everything, so the search always ends.
AUTO_ORDER = ("native", "fused", "autograd")

AUTO = AUTO_ENGINE
ENGINE_CHOICES = (AUTO, *ENGINES)  # for the command line; the registry itself may grow


def engine_class(name: str, request: EngineRequest) -> type[Engine]:
    """The engine class that will train ``request`` under the setting ``name`` (no buffers are
    allocated): for ``auto`` the first of :data:`AUTO_ORDER` that serves it. Raises a one-line
    AevbError naming the reason when the engine asked for cannot."""
    if name == AUTO:
        return next(ENGINES[n] for n in AUTO_ORDER if ENGINES[n].unsupported_reason(request) is None)
    if name not in ENGINES:
        raise AevbError(f"unknown engine {name!r}; choose one of {', '.join((AUTO, *ENGINES))}")
    reason = ENGINES[name].unsupported_reason(request)
    if reason is not None:
        raise AevbError(f"`engine` {name} cannot train this model: {reason}")
    return ENGINES[name]


def select_engine(name: str, request: EngineRequest) -> Engine:
    """The engine for a run, built (see :func:`engine_class`)."""
    return engine_class(name, request)(request)


__all__ = [
    "AUTO",
    "AUTO_ORDER",
    "ENGINES",
    "ENGINE_CHOICES",
    "Engine",
    "EngineRequest",
    "Gradient",
    "Objective",
    "engine_class",
    "select_engine",
]
