"""A process's place among those training one model, and its part of a minibatch.

The training loop (:mod:`aevb.training`) makes them and the engines (:mod:`aevb.engines`) sum their
shards' gradients over them; a module of their own, below both, so that the engines need not
import training, which imports the engines. Starting the processes under torchrun and checking a
run can be distributed is :mod:`aevb.training.distributed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessGroup:
    """Where this process stands among those training one model. ``world_size`` 1: no distribution."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes on this machine (torchrun's LOCAL_WORLD_SIZE)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch_size: int) -> slice:
        """The rows of a minibatch of ``batch_size`` that this process reads: a contiguous block,
        sizes differing by at most one (``torch.tensor_split``'s rule)."""
        base, extra = divmod(batch_size, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the processes, in place (a no-op on one process)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum_gradients_(
        self, parameters: list[torch.Tensor], weight: float, flat_gradient: torch.Tensor | None = None
    ) -> None:
        """param.grad ← Σ_processes weight_p · param.grad_p, in one all-reduce of a flat buffer
        (in place when the gradients are views of ``flat_gradient``, as the fused step's are)."""
        if not self.distributed:
            return
        if flat_gradient is not None:
            dist.all_reduce(flat_gradient.mul_(weight), op=dist.ReduceOp.SUM)
            return
        grads = [p.grad for p in parameters]
        flat = torch.cat([grad.reshape(-1) for grad in grads]).mul_(weight)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        for grad, reduced in zip(grads, flat.split([grad.numel() for grad in grads])):
            grad.copy_(reduced.view_as(grad))

    def all_agree(self, ok: bool, device: torch.device) -> bool:
        """True when ``ok`` on every process: lets all stop together when one of them cannot go on
        (rank 0 failing to create the run directory must not leave the others waiting)."""
        if not self.distributed:
            return ok
        flag = torch.tensor([1.0 if ok else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item() > 0)


@dataclass(frozen=True)
class Shard:
    """This process's part of a minibatch in multi-process training: ``rows`` of the whole
    minibatch of ``size`` points."""

    rows: slice
    size: int
    group: ProcessGroup


SINGLE_PROCESS = ProcessGroup()
