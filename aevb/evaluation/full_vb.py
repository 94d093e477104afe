"""Evaluating a full-VB model (App. F): the bound averaged over q(θ), the full bound on
(1/N) log p(X), and the predictive log-likelihood log E_q(θ)[p_θ(x)] by importance sampling."""

from __future__ import annotations

import math
import time

import torch

from ..errors import AevbError
from ..models.full_vb import FullVBVAE
from .bound import BoundEstimate, per_datapoint_bound
from .importance_sampling import LogLikelihoodEstimate, estimate_log_likelihood, log_mean_exp_with_stderr


@torch.no_grad()
def expected_bound(
    model: FullVBVAE, data: torch.Tensor, num_samples: int = 1, parameter_draws: int = 10, batch_size: int | None = None
) -> BoundEstimate:
    """E_q(θ)[𝓛_θ(x)] averaged over the rows of ``data`` (N, D): nats per datapoint, estimated with
    ``parameter_draws`` draws of θ, each scoring every row with L = ``num_samples`` draws of z
    (estimator B). On test data it is a lower bound on the predictive log p(x) (Jensen, twice);
    the standard error is over datapoints of the per-row averages."""
    total = torch.zeros(data.shape[0], dtype=torch.float64, device=data.device)
    for _ in range(parameter_draws):
        with model.decoder_parameters(model.draw_decoder_parameters()):
            total += per_datapoint_bound(
                model, data, estimator="B", num_samples=num_samples, batch_size=batch_size
            ).double()
    values = total / parameter_draws
    count = values.numel()
    stderr = values.std().item() / math.sqrt(count) if count > 1 else math.nan
    return BoundEstimate(mean=values.mean().item(), stderr=stderr, num_datapoints=count, num_samples=num_samples)


def full_bound(
    model: FullVBVAE, train: torch.Tensor, prior_precision: float = 1.0, num_samples: int = 1, parameter_draws: int = 10
) -> float:
    """𝓛(φ; X)/N = mean over the N training rows of E_q(θ)[𝓛_θ(x)] − KL(q(θ) ‖ p(θ))/N, nats per
    datapoint: the bound on (1/N) log p(X) that full VB maximises."""
    with torch.no_grad():
        kl = model.decoder_parameter_kl(prior_precision).item()
    return expected_bound(model, train, num_samples, parameter_draws).mean - kl / train.shape[0]


@torch.no_grad()
def predictive_log_likelihood(
    model: FullVBVAE,
    data: torch.Tensor,
    num_samples: int = 1000,
    parameter_draws: int = 10,
    prior_mixture: float = 0.0,
    progress: bool = False,
) -> LogLikelihoodEstimate:
    """The predictive log-likelihood log p(x) = log E_q(θ)[p_θ(x)] of every row of ``data`` (N, D).

    For each of S = ``parameter_draws`` draws θ_s ~ q(θ), k = ``num_samples`` importance samples
    of z (encoder proposal, :func:`aevb.evaluation.importance_sampling.estimate_log_likelihood`) give
    û_s = (1/k) Σ_k p_θs(x, z_k)/q(z_k|x); the estimate is log (1/S) Σ_s û_s, the log-mean-exp of all
    S·k weights. The û_s are independent and identically distributed, so the standard error
    (delta method) comes from their spread: it includes the variation over θ, which the k weights
    of one draw cannot show. Needs S ≥ 2 for a standard error (NaN otherwise). Nats per datapoint.
    ``progress``: a bar for each draw's importance sampling, with its time left.
    """
    if parameter_draws < 1 or num_samples < 1:
        raise AevbError(
            f"parameter draws and importance samples must be positive, got {parameter_draws}, {num_samples}"
        )
    started = time.perf_counter()
    log_sum = torch.full((data.shape[0],), -math.inf, dtype=torch.float64)
    log_sum_squares = log_sum.clone()
    for _ in range(parameter_draws):
        with model.decoder_parameters(model.draw_decoder_parameters()):
            log_u = estimate_log_likelihood(
                model, data, num_samples=num_samples, prior_mixture=prior_mixture, progress=progress
            ).per_datapoint
        log_sum = torch.logaddexp(log_sum, log_u)
        log_sum_squares = torch.logaddexp(log_sum_squares, 2 * log_u)
    estimate, stderr = log_mean_exp_with_stderr(log_sum, log_sum_squares, parameter_draws)
    return LogLikelihoodEstimate.from_per_datapoint(
        estimate, stderr, parameter_draws * num_samples, time.perf_counter() - started
    )
