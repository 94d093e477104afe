"""Training on several processes with ``torch.distributed``, launched by ``torchrun``.

    torchrun --nproc-per-node 2 --no-python aevb train ...      # the same command, two processes

Data parallelism that reproduces a single process. Every process holds the model and the data,
seeds its generator identically and so draws the same permutation of the training set, and the
same ε and binarisation noise, as a one-process run would for the *whole* minibatch of M points
(M = ``--batch-size`` stays the global minibatch of Algorithm 1). Each process then reads only
its own shard of every minibatch — a contiguous block of about M / P rows — and the noise rows
that go with it. The gradients of the shards are summed with weights (rows in shard) / M, so
the averaged gradient is that of the minibatch estimator −(1/M) Σᵢ 𝓛̃(x⁽ⁱ⁾) (eq. 8), whatever
the shard sizes: the step size needs no rescaling and the run matches a one-process run to
rounding. The autograd engine does this through ``DistributedDataParallel`` (its loss scaled by
P · rows / M, since DDP averages over processes; :mod:`aevb.engines.autograd`); the fused engines
compute gradients outside autograd, so they all-reduce them themselves in one flat bucket, as DDP
would. Evaluation is
replicated rather than sharded: every process evaluates the same points, which keeps every
generator in step with the one-process run. Only rank 0 writes the run directory.

Backends: gloo on CPU, NCCL on CUDA (each process on ``cuda:LOCAL_RANK``).

A process's place among the others and its part of a minibatch (:class:`ProcessGroup`,
:class:`Shard`) are defined in :mod:`aevb.process_group`, below both training and the engines
that sum the shards' gradients, and imported from here too; this module starts and checks the
processes.
"""

from __future__ import annotations

import atexit
import datetime
import os

import torch
import torch.distributed as dist

from ..errors import AevbError
from ..process_group import SINGLE_PROCESS, ProcessGroup, Shard

__all__ = [
    "SINGLE_PROCESS",
    "ProcessGroup",
    "Shard",
    "check_distributable",
    "from_environment",
    "local_device",
    "shutdown",
]


def check_distributable(
    group: ProcessGroup, algorithm, batch_size: int, per_point_measurements: bool = False, posterior: str = "gaussian"
) -> None:
    """A one-line error when several processes cannot train this run: only an algorithm that says
    it is ``distributable`` (AEVB) is sharded, a
    minibatch needs a row per process, measurements per evaluation point that draw their own
    noise (``per_point_measurements``, e.g. marginal-likelihood estimates) would draw it on rank 0
    alone, and processes share one minibatch's ε ~ N(0, I), which only the Gaussian posterior
    takes from outside (:func:`aevb.models.distributions.draw_posterior`)."""
    if not group.distributed:
        return
    if not algorithm.distributable:
        raise AevbError(f"multi-process training runs AEVB only, not {algorithm.name}")
    if posterior != "gaussian":
        raise AevbError(f"multi-process training needs the Gaussian posterior, not {posterior}; run without torchrun")
    if per_point_measurements:
        raise AevbError("extra measurements at every evaluation point are taken on one process; run without torchrun")
    if batch_size < group.world_size:
        raise AevbError(f"`batch_size` {batch_size} is smaller than the {group.world_size} processes")


def from_environment(device: torch.device) -> ProcessGroup:
    """The process group torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR/PORT), initialised with gloo (CPU) or NCCL (CUDA); one process without them.

    A group initialised here is destroyed at interpreter exit (:func:`shutdown`, a no-op when the
    caller already did), and destroying it stops its threads: a gloo process whose group is still
    alive when the interpreter finalises can abort with SIGABRT ("terminate called without an
    active exception", pytorch/pytorch#190489) when a worker thread releases the tensors of its
    last collective, failing a run that trained and saved correctly."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE_PROCESS
    if not dist.is_available():
        raise AevbError("this torch build has no torch.distributed; run on one process")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        # The first torch.optim optimizer imports torch._dynamo; imported while a group exists, it
        # keeps a reference to that group which destroy_process_group cannot drop, so gloo's worker
        # threads would live on into interpreter teardown (and abort there, as above). Imported
        # first, it holds none.
        import torch._dynamo  # noqa: F401

        options = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30), **options)
        atexit.register(shutdown)
    return ProcessGroup(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size))),
    )


def local_device(device: torch.device, group: ProcessGroup) -> torch.device:
    """On CUDA each process takes the GPU of its local rank."""
    if device.type == "cuda" and group.distributed and device.index is None:
        return torch.device("cuda", group.local_rank)
    return device


def shutdown() -> None:
    """Leave the process group, if one is initialised (safe to call more than once)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
