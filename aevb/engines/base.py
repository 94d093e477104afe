"""The interface every training engine serves: how the gradient of Algorithm 1's minibatch loss
is computed, behind one seam.

An engine is asked once per run whether it can serve (:meth:`Engine.unsupported_reason`, a
classmethod over an :class:`EngineRequest`) and then built for the run. Each step it writes
∂loss/∂θ into ``param.grad`` for the loss −(1/M) Σᵢ 𝓛̃(x⁽ⁱ⁾) of the whole minibatch (eq. 8,
per datapoint), summed over the processes of a multi-process run, and returns what the numeric
guard needs (:class:`Gradient`). An engine that can also apply the optimiser's update inside
its step says so per optimiser (:meth:`Engine.applies_optimizer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from ..process_group import Shard

#: (model, x (M, D), L, noise ε (L, M, J) or None) → per-datapoint bound estimates (M,), nats.
Objective = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class EngineRequest:
    """What a run asks of an engine.

    ``estimator`` names the objective when it is one of the paper's SGVB estimators ("A", "B",
    §2.3) or the IWAE bound ("IWAE"), which hand-derived engines recognise; None for any other
    ``objective`` (full VB's bound, App. F), which only autograd differentiates. ``device`` and
    ``dtype`` are those the run trains in (the model may still be elsewhere, e.g. on the meta
    device for a check before anything is allocated).
    """

    model: nn.Module
    objective: Objective
    estimator: str | None
    num_samples: int
    device: torch.device
    dtype: torch.dtype = torch.float32
    distributed: bool = False


@dataclass(frozen=True)
class Gradient:
    """One step's result before the update: ``bound_sum`` Σᵢ 𝓛̃(x⁽ⁱ⁾) over this process's rows
    (0-dim, nats); the ``parameters`` whose ``.grad`` now holds the gradient; ``flat`` the one
    buffer those gradients are views of, when the engine keeps one (the guard then checks it in
    one reduction)."""

    bound_sum: torch.Tensor
    parameters: list[torch.Tensor]
    flat: torch.Tensor | None = None


class Engine:
    """A way of computing Algorithm 1's gradient. Subclasses set ``name`` (its key in
    :data:`aevb.engines.ENGINES`, the ``engine`` setting) and ``description`` (what summary.json
    reports), and implement :meth:`unsupported_reason` and :meth:`gradient`."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: Whether a step gives the same bits on any number of CPU threads, so that the adaptive thread
    #: policy (:mod:`aevb.threads`) may change the count between steps without changing the run.
    thread_count_invariant: ClassVar[bool] = False

    @classmethod
    def unsupported_reason(cls, request: EngineRequest) -> str | None:
        """Why this engine cannot train ``request``, in a phrase; None when it can."""
        raise NotImplementedError

    def __init__(self, request: EngineRequest):
        self.request = request
        self.model = request.model

    def gradient(self, x: torch.Tensor, noise: torch.Tensor | None = None, shard: Shard | None = None) -> Gradient:
        """Write ∂(−(1/M) Σᵢ 𝓛̃ᵢ)/∂θ into ``param.grad`` for minibatch x (M, D) — with ``shard``,
        this process's rows of a minibatch of ``shard.size``, the gradient summed over processes.
        ``noise``: ε (L, M, J) instead of fresh draws from the global generator."""
        raise NotImplementedError

    def applies_optimizer(self, optimizer: torch.optim.Optimizer, x: torch.Tensor, shard: Shard | None = None) -> bool:
        """Whether :meth:`gradient_and_update` can apply this optimiser's step itself, on
        minibatch x (M, D) of this process."""
        return False

    def gradient_and_update(
        self, x: torch.Tensor, noise: torch.Tensor | None, optimizer: torch.optim.Optimizer
    ) -> torch.Tensor:
        """The gradient and the optimiser's update in one pass; returns the bound sum, NaN when a
        non-finite loss or gradient skipped the update. Only where :meth:`applies_optimizer`."""
        raise NotImplementedError(f"the {self.name} engine does not apply optimisers")

    def close(self) -> None:
        """Drop buffers and process-group state (before the process group goes away)."""
