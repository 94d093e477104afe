"""What one iteration of a learning algorithm does: the protocol, and AEVB (Algorithm 1) itself."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from ..distributed import SINGLE_PROCESS, ProcessGroup, SGVBObjective, data_parallel
from ..errors import AevbError
from ..estimators import get_estimator
from ..fused import FusedStep, unsupported_reason
from ..model import VAE
from ..optimizers import guarded_step, non_finite


class Algorithm(Protocol):
    """One iteration of a learning algorithm on a minibatch. AEVB is the paper's; the baselines
    it is compared with (wake-sleep, Monte Carlo EM; :mod:`aevb.baselines`) plug in here with the
    same optimiser, data order and evaluation.

    ``has_bound`` (default True when absent) says whether the encoder-based lower bound means
    anything for the model the algorithm trains. When False (Monte Carlo EM trains no encoder)
    the trainer reports NaN bounds, checks the parameters for divergence instead, and needs an
    explicit step size, as the step-size selection of §5 ranks candidates by the bound.
    """

    has_bound: bool = True

    def setup(self, model: VAE, train: torch.Tensor) -> None:
        """Called once before training (e.g. to allocate per-datapoint state)."""

    def step(self, model: VAE, optimizer: torch.optim.Optimizer, x: torch.Tensor,
             indices: torch.Tensor) -> torch.Tensor:
        """Update the parameters on minibatch x (M, D) of training rows ``indices`` (M,); return
        the sum over the minibatch of a per-datapoint bound estimate (0-dim tensor, nats), NaN
        when the algorithm has none."""


@dataclass(frozen=True)
class Shard:
    """This process's part of a minibatch in multi-process training (:mod:`aevb.distributed`):
    ``rows`` of the whole minibatch of ``size`` points."""

    rows: slice
    size: int
    group: ProcessGroup


class AEVB:
    """Algorithm 1: a gradient step on the minibatch SGVB estimate of the bound (per datapoint).

    ``engine`` chooses how the gradient is computed: "autograd" (``loss.backward()`` on the
    estimators of :mod:`aevb.estimators`), "fused" (:class:`aevb.fused.FusedStep`, the same
    gradient with hand-derived formulas and preallocated buffers, faster on a CPU), or "auto",
    fused whenever the model and estimator allow it.
    """

    has_bound = True

    def __init__(self, estimator: str = "B", num_samples: int = 1, engine: str = "auto"):
        self.estimator = estimator.upper()
        self.estimate = get_estimator(estimator)
        self.num_samples = num_samples
        self.engine = engine
        self._fused: FusedStep | None = None
        self._data_parallel = None
        self.uses_fused = False

    def setup(self, model: VAE, train: torch.Tensor, group: ProcessGroup = SINGLE_PROCESS) -> None:
        self._fused = None
        reason = None if self.engine == "autograd" else unsupported_reason(model, self.estimator)
        if self.engine == "fused" and reason is not None:
            raise AevbError(f"`engine` fused cannot train this model: {reason}")
        self.uses_fused = self.engine != "autograd" and reason is None
        self._data_parallel = None
        if group.distributed and not self.uses_fused:
            self._data_parallel = data_parallel(SGVBObjective(model, self.estimate, self.num_samples), train.device)

    def teardown(self) -> None:
        """Drop the step's buffers and the DDP wrapper (before the process group goes away: a
        DDP reducer outliving its group aborts the process at exit)."""
        self._fused = None
        self._data_parallel = None

    def step(self, model: VAE, optimizer: torch.optim.Optimizer, x: torch.Tensor,
             indices: torch.Tensor, shard: Shard | None = None) -> torch.Tensor:
        noise = None
        if shard is not None:   # the whole minibatch's ε, as one process draws it; keep our rows
            latent = model.prior().event_shape
            noise = torch.empty(self.num_samples, shard.size, *latent, dtype=x.dtype,
                                device=x.device).normal_()[:, shard.rows]
        if self.uses_fused:
            if self._fused is None or self._fused.batch_size < x.shape[0] or self._fused.model is not model:
                self._fused = FusedStep(model, self.estimator, self.num_samples, x.shape[0])
                self.engine_used = "fused, native kernels" if self._fused.kernels is not None else \
                    "fused, torch operations"
            if shard is None and self._fused.applies_optimizer(optimizer):
                # The native step applies the update itself, each layer's while its gradient is in
                # cache, and skips it (reported as NaN) on a non-finite loss or gradient.
                bound_sum = self._fused(x, noise, optimizer=optimizer)
                return torch.full_like(bound_sum, math.nan) if self._fused.skipped else bound_sum
            bound_sum = self._fused(x, noise)
            parameters, flat_gradient = self._fused.parameters, self._fused.flat_gradient
            if shard is not None:
                shard.group.sum_gradients_(parameters, weight=x.shape[0] / shard.size, flat_gradient=flat_gradient)
        else:
            self.engine_used = "autograd"
            optimizer.zero_grad(set_to_none=True)
            if self._data_parallel is not None:
                # DDP averages over the P processes: scale so the average is −(1/M) Σ over all M.
                bound = self._data_parallel(x, noise)
                loss = -bound.sum() * (shard.group.world_size / shard.size)
            else:
                bound = self.estimate(model, x, self.num_samples, noise=noise)
                loss = -bound.mean()
            loss.backward()
            bound_sum = bound.detach().sum()
            parameters, flat_gradient = [p for p in model.parameters() if p.grad is not None], None
        # A non-finite loss or gradient never reaches the parameters: the step is skipped (on the
        # device, no host sync) and reported as a NaN bound, which the trainer counts.
        bad = non_finite(parameters, bound_sum, flat_gradient)
        guarded_step(optimizer, bad)
        return torch.where(bad > 0, torch.full_like(bound_sum, math.nan), bound_sum)
