"""The autograd engine: ``loss.backward()`` on the objective written in torch (the estimators of
:mod:`aevb.objectives.estimators`, or an algorithm's own, such as full VB's). It serves every model and
objective, and is the reference the hand-derived engines are tested against."""

from __future__ import annotations

import torch
from torch import nn

from ..process_group import Shard
from .base import Engine, EngineRequest, Gradient


class SGVBObjective(nn.Module):
    """The per-datapoint SGVB estimate as a module's ``forward``, the form DistributedDataParallel
    wraps: its forward prepares the gradient all-reduce that the backward pass then runs."""

    def __init__(self, model: nn.Module, estimator, num_samples: int):
        super().__init__()
        self.model = model
        self.estimator = estimator
        self.num_samples = num_samples

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """(M, D), ε (L, M, J) → per-datapoint bound (M,), nats."""
        return self.estimator(self.model, x, self.num_samples, noise=noise)


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around ``module`` (gloo on CPU, NCCL on its GPU)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)


class AutogradEngine(Engine):
    """Gradients by autograd; on several processes through ``DistributedDataParallel``, whose
    average over P processes is scaled to the sum −(1/M) Σ over all M rows."""

    name = "autograd"
    description = "autograd"

    @classmethod
    def unsupported_reason(cls, request: EngineRequest) -> str | None:
        return None

    def __init__(self, request: EngineRequest):
        super().__init__(request)
        self._data_parallel = None
        if request.distributed:
            self._data_parallel = data_parallel(
                SGVBObjective(request.model, request.objective, request.num_samples), request.device
            )

    def gradient(self, x: torch.Tensor, noise: torch.Tensor | None = None, shard: Shard | None = None) -> Gradient:
        for parameter in self.model.parameters():
            parameter.grad = None
        if self._data_parallel is not None and shard is not None:
            bound = self._data_parallel(x, noise)
            loss = -bound.sum() * (shard.group.world_size / shard.size)
        else:
            bound = self.request.objective(self.model, x, self.request.num_samples, noise=noise)
            loss = -bound.mean()
        loss.backward()
        return Gradient(bound.detach().sum(), [p for p in self.model.parameters() if p.grad is not None])

    def close(self) -> None:
        # A DDP reducer outliving its process group aborts the process at exit.
        self._data_parallel = None
