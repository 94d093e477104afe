"""Importance-sampled marginal log-likelihood and the IWAE bound, with the encoder as proposal.

With z₁..z_k ~ q(z|x) and weights w_k = p(x, z_k) / q(z_k|x),

    log p(x) ≈ log (1/k) Σ_k w_k,

which is the importance-weighted bound of Burda, Grosse & Salakhutdinov (2015): a lower bound in
expectation that increases with k and converges to log p(x) as k → ∞; at k = 1 it is the
paper's estimator A (§2.3). As a training objective (:func:`aevb.objectives.estimators.iwae_bound`) the
samples are reparameterised; as an evaluation (``estimate_log_likelihood``) they are streamed in chunks so
that any k fits in a fixed memory budget, and each datapoint gets a standard error.

Standard error of log p̂ for one datapoint (delta method): se² ≈ Var(w) / (k · E[w]²), computed
from running log Σw and log Σw² so that nothing overflows.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch

from ..chunk_workers import ChunkWorkers
from ..models.buildable import hidden_activations_per_row
from ..models.vae import ModelConfig, evaluation_mode
from ..objectives.estimators import LatentVariableModel, log_importance_weights
from ..progress import progress_bar
from ..threads import evaluation_threads
from ..validation import require_count, require_rows
from .decoding import decoder_log_prob, fast_importance_weights, fast_importance_weights_apply

#: Importance samples per datapoint of the log-likelihood protocol every VAE paper reports
#: (Burda, Grosse & Salakhutdinov 2015, Table 1: k = 5000).
PROTOCOL_SAMPLES = 5000

#: Datapoints encoded at once on the fast path (an (N, J) mean and scale each: small).
ENCODER_BLOCK_POINTS = 1024

#: (datapoint, sample) rows each worker of the fast path decodes at once on a CPU: fewer, and a
#: chunk's fixed costs show; more, and the workers' chunks together slow down in memory (timings
#: from 512 to 8192 rows in docs/performance.md, "Importance sampling against the GEMM-only bound").
CPU_WORKER_CHUNK_ROWS = 2048
#: The fewest rows per worker chunk before a tight ``memory_budget`` means fewer workers instead.
MIN_WORKER_CHUNK_ROWS = CPU_WORKER_CHUNK_ROWS // 4


@dataclass(frozen=True)
class LogLikelihoodEstimate:
    """An estimate of log p(x) per datapoint and for the dataset mean, in nats.

    ``stderr`` is the Monte Carlo standard error of ``mean`` (from the per-datapoint errors);
    ``spread_stderr`` is the standard deviation over datapoints / √N, the error of the mean as an
    estimate of the expectation over the data distribution.
    """

    mean: float
    stderr: float
    spread_stderr: float
    per_datapoint: torch.Tensor  # (N,)
    per_datapoint_stderr: torch.Tensor  # (N,)
    num_samples: int
    seconds: float

    @classmethod
    def from_per_datapoint(
        cls, values: torch.Tensor, stderrs: torch.Tensor, num_samples: int, seconds: float
    ) -> "LogLikelihoodEstimate":
        values, stderrs = values.double().cpu(), stderrs.double().cpu()
        count = values.numel()
        spread = values.std().item() / math.sqrt(count) if count > 1 else float("nan")
        return cls(
            mean=values.mean().item(),
            stderr=stderrs.square().sum().sqrt().item() / count,
            spread_stderr=spread,
            per_datapoint=values,
            per_datapoint_stderr=stderrs,
            num_samples=num_samples,
            seconds=seconds,
        )


def log_mean_exp_with_stderr(
    log_sum: torch.Tensor, log_sum_squares: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """From log Σu and log Σu² over ``count`` draws: log mean(u) and its delta-method standard error."""
    estimate = log_sum - math.log(count)
    relative_variance = torch.exp(math.log(count) + log_sum_squares - 2 * log_sum) - 1.0
    if count < 2:  # one draw says nothing about its own spread
        return estimate, torch.full_like(estimate, math.nan)
    return estimate, torch.sqrt(relative_variance.clamp(min=0.0) / (count - 1))


def rows_within_budget(model, data_dim: int, memory_budget: int) -> int:
    """How many (datapoint, sample) pairs to decode at once within ``memory_budget`` bytes.

    Per pair the decoder holds a few D-sized tensors (logits or mean and log-variance, the
    log-density terms) and its hidden activations; counted generously in float32/64.
    """
    config = getattr(model, "config", None)
    hidden = hidden_activations_per_row(config) if isinstance(config, ModelConfig) else 0
    latent = getattr(config, "latent_dim", 0)
    bytes_per_row = 8 * (4 * data_dim + 2 * hidden + 4 * latent)
    return max(1, memory_budget // bytes_per_row)


@torch.no_grad()
def estimate_log_likelihood(
    model: "LatentVariableModel",
    data: torch.Tensor,
    num_samples: int = PROTOCOL_SAMPLES,
    memory_budget: int = 256 * 2**20,
    max_rows: int | None = None,
    prior_mixture: float = 0.0,
    progress: bool = False,
    threads: int | None = None,
) -> LogLikelihoodEstimate:
    """Importance-sampled log p(x) for every row of ``data`` (N, D) with k = ``num_samples``.

    Work is batched over datapoints and samples: at most ``max_rows`` (datapoint, sample) pairs are
    decoded at once (by default as many as fit in ``memory_budget`` bytes, shared by the workers of
    the fast path, and on a CPU no more than :data:`CPU_WORKER_CHUNK_ROWS` per worker on the fast
    path, or a cache-sized chunk, :func:`aevb.evaluation.bound.default_chunk_rows`, on the
    reference; a budget that leaves a worker fewer than :data:`MIN_WORKER_CHUNK_ROWS` runs fewer
    workers), so memory stays bounded for any k and any N. ``prior_mixture`` = α mixes the prior
    into the proposal (see :func:`log_importance_weights`); α = 0 is the usual encoder proposal,
    α = 1 the prior alone (for a model whose encoder was not trained; low-dimensional z only).
    ``progress``: a bar over the N·k decoder evaluations, with the time left.

    Threads: on a CPU the fast path (:func:`fast_importance_weights`) decodes its chunks on
    ``threads`` worker threads of one intra-op thread each (default: torch's current count;
    :class:`aevb.chunk_workers.ChunkWorkers`), and its numbers are the same, bit for bit, for any count.
    The reference path runs its chunks one at a time at ``threads`` intra-op threads, or by
    default at the count that evaluates fastest now (:class:`aevb.threads.StepThreads`).
    """
    if not 0 <= prior_mixture <= 1:
        from ..errors import AevbError

        raise AevbError(f"prior mixture must lie in [0, 1], got {prior_mixture}")
    require_rows(data, model)
    num_samples = require_count(num_samples, "num_samples")
    if max_rows is not None:
        max_rows = require_count(max_rows, "max_rows")
    started = time.perf_counter()
    fast = prior_mixture <= 0 and fast_importance_weights_apply(model)
    # On a CPU the fast path decodes chunks on worker threads (ChunkWorkers), each worker holding a chunk.
    workers = (
        ChunkWorkers(threads if threads is not None else torch.get_num_threads())
        if fast and data.device.type == "cpu"
        else None
    )
    if max_rows is None:
        from .bound import default_chunk_rows

        budget_rows = rows_within_budget(model, data.shape[1], memory_budget)
        if workers is None:
            max_rows = min(budget_rows, default_chunk_rows(data.device))
        else:  # the workers' chunks share the budget; fewer workers rather than chunks too small to pay
            workers = ChunkWorkers(min(workers.count, max(1, budget_rows // MIN_WORKER_CHUNK_ROWS)))
            max_rows = max(1, min(budget_rows // workers.count, CPU_WORKER_CHUNK_ROWS))
    points_per_pass = max(1, min(data.shape[0], max_rows // num_samples))
    samples_per_pass = max(1, min(num_samples, max_rows // points_per_pass))
    bar = progress_bar(
        data.shape[0] * num_samples, unit="sample", desc=f"log p(x), k = {num_samples}", enabled=progress, logged=True
    )
    chunks = _chunks(model, data, num_samples, points_per_pass, samples_per_pass, prior_mixture, fast)
    with evaluation_mode(model):
        if workers is not None:
            estimates, stderrs = _per_datapoint(workers.map(chunks), num_samples, bar)
        else:
            policy = evaluation_threads(threads, data.device)
            policy.start()
            try:
                estimates, stderrs = _per_datapoint(
                    ((pass_size, policy.run(task, pass_size[0] * pass_size[1])) for pass_size, task in chunks),
                    num_samples,
                    bar,
                )
            finally:
                policy.stop()
    bar.close()
    return LogLikelihoodEstimate.from_per_datapoint(
        torch.cat(estimates), torch.cat(stderrs), num_samples, time.perf_counter() - started
    )


def _chunks(
    model,
    data: torch.Tensor,
    num_samples: int,
    points_per_pass: int,
    samples_per_pass: int,
    prior_mixture: float,
    fast: bool,
) -> Iterator[tuple[tuple[int, int], Callable[[], LogSums]]]:
    """The log-weight computations for every row of ``data``, in order: ((points, samples), task),
    where ``task()`` returns the :data:`LogSums` over ``samples`` draws for each of ``points``
    datapoints (a pass: ``points_per_pass`` rows, the last one fewer); a pass's ``num_samples``
    draws come in chunks of at most ``samples_per_pass``. A fast-path task draws its noise from
    a generator seeded here, in this order, so that it may run on any thread."""
    # The fast path encodes many datapoints at once (the encoder's share of the work is then
    # negligible at any k); the reference encodes each pass's datapoints.
    block_points = points_per_pass * max(1, ENCODER_BLOCK_POINTS // points_per_pass) if fast else points_per_pass
    for block_start in range(0, data.shape[0], block_points):
        block = data[block_start : block_start + block_points]
        if fast:
            posterior = model.encode(block)
            means, stds = posterior.mean, posterior.stddev
        for start in range(0, block.shape[0], points_per_pass):
            x = block[start : start + points_per_pass]
            if fast:
                mean, std = means[start : start + points_per_pass], stds[start : start + points_per_pass]
            else:
                posterior = model.encode(x)
            for drawn in range(0, num_samples, samples_per_pass):
                count = min(samples_per_pass, num_samples - drawn)
                if fast:
                    seed = int(torch.randint(2**62, ()))
                    task = functools.partial(_fast_log_sums, model, x, mean, std, count, seed)
                else:
                    task = functools.partial(
                        _log_sums,
                        log_importance_weights,
                        model,
                        x,
                        count,
                        reparameterize=False,
                        posterior=posterior,
                        prior_mixture=prior_mixture,
                        log_likelihood=decoder_log_prob,
                    )
                yield (x.shape[0], count), task


#: log Σ_k w_k and log Σ_k w_k² over a chunk's draws, per datapoint: two (points,) float64 tensors.
LogSums = tuple[torch.Tensor, torch.Tensor]


def _log_sums(weights: Callable[..., torch.Tensor], *args, **kwargs) -> LogSums:
    log_w = weights(*args, **kwargs).double()  # (samples, points)
    return torch.logsumexp(log_w, dim=0), torch.logsumexp(log_w.mul_(2), dim=0)


@torch.no_grad()
def _fast_log_sums(model, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, count: int, seed: int) -> LogSums:
    generator = torch.Generator(device=mean.device).manual_seed(seed)
    noise = torch.randn(count, *mean.shape, dtype=mean.dtype, device=mean.device, generator=generator)
    return _log_sums(fast_importance_weights, model, x, mean, std, count, noise)


def _per_datapoint(
    chunks: Iterable[tuple[tuple[int, int], LogSums]], num_samples: int, bar
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """log p̂(x) and its standard error for every datapoint, from the chunks' :data:`LogSums` in
    the order of :func:`_chunks`, combined by running log-sum-exps in float64."""
    estimates, stderrs = [], []
    log_sum = log_sum_squares = None
    drawn = 0
    for (points, count), (chunk_sum, chunk_sum_squares) in chunks:
        log_sum = chunk_sum if drawn == 0 else torch.logaddexp(log_sum, chunk_sum)
        log_sum_squares = chunk_sum_squares if drawn == 0 else torch.logaddexp(log_sum_squares, chunk_sum_squares)
        bar.update(points * count)
        drawn += count
        if drawn == num_samples:
            estimate, stderr = log_mean_exp_with_stderr(log_sum, log_sum_squares, num_samples)
            estimates.append(estimate)
            stderrs.append(stderr)
            drawn = 0
    return estimates, stderrs
