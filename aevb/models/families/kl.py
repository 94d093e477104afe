"""Closed-form KL divergences that the §2.4 families need and torch's registry lacks (estimator B,
eq. 7). Only exact formulas are registered; every one is checked against a Monte Carlo estimate
in tests/test_families.py. Pairs with no closed form train with estimator A (eq. 6).

For a prior N(m, s²) the KL of any q with entropy H(q), mean μ_q and variance v_q is exact:

    KL(q ‖ N(m, s²)) = −H(q) + ½ log(2π s²) + (v_q + (μ_q − m)²) / (2 s²),

which gives Logistic, Triangular and Student-t (ν > 2; +∞ otherwise) against a Gaussian.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Beta, Independent, MultivariateNormal, Normal, StudentT, Uniform
from torch.distributions.kl import kl_divergence, register_kl

from .inverse_cdf import Logistic, Rayleigh
from .location_scale import Triangular


def _kl_to_normal(entropy: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor, prior: Normal) -> torch.Tensor:
    prior_variance = prior.scale.square()
    return (
        -entropy
        + 0.5 * torch.log(2 * math.pi * prior_variance)
        + (variance + (mean - prior.loc).square()) / (2 * prior_variance)
    )


@register_kl(Logistic, Normal)
def _kl_logistic_normal(p: Logistic, q: Normal) -> torch.Tensor:
    return _kl_to_normal(p.entropy(), p.mean, p.variance, q)


@register_kl(Triangular, Normal)
def _kl_triangular_normal(p: Triangular, q: Normal) -> torch.Tensor:
    return _kl_to_normal(p.entropy(), p.mean, p.variance, q)


@register_kl(StudentT, Normal)
def _kl_student_t_normal(p: StudentT, q: Normal) -> torch.Tensor:
    # torch's StudentT.variance is +inf for 1 < ν ≤ 2 and NaN for ν ≤ 1; the KL is +inf for both.
    variance = torch.where(p.df > 2, p.variance, torch.full_like(p.variance, math.inf))
    mean = torch.where(p.df > 2, p.loc, torch.zeros_like(p.loc))
    return _kl_to_normal(p.entropy(), mean, variance, q)


@register_kl(Rayleigh, Rayleigh)
def _kl_rayleigh_rayleigh(p: Rayleigh, q: Rayleigh) -> torch.Tensor:
    # ∫ p log(p/q) = 2 log(σ_q/σ_p) + E_p[z²](1/2σ_q² − 1/2σ_p²), E_p[z²] = 2σ_p².
    ratio = (p.scale / q.scale).square()
    return ratio - 1 - ratio.log()


@register_kl(MultivariateNormal, Independent)
def _kl_full_covariance_diagonal(p: MultivariateNormal, q: Independent) -> torch.Tensor:
    """KL(N(μ, LLᵀ) ‖ N(m, diag s²)) for a prior that is an Independent Normal over the event."""
    if not (isinstance(q.base_dist, Normal) and q.reinterpreted_batch_ndims == 1):
        raise NotImplementedError
    variance = q.base_dist.scale.square()
    trace = (p.scale_tril.square().sum(-1) / variance).sum(-1)  # tr(Σ_q⁻¹ Σ_p), Σ_p = LLᵀ
    mahalanobis = ((q.base_dist.loc - p.loc).square() / variance).sum(-1)
    log_det_p = 2 * p.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    log_det_q = variance.log().sum(-1)
    dim = p.event_shape[0]
    return 0.5 * (trace + mahalanobis - dim + log_det_q - log_det_p)


@register_kl(Independent, MultivariateNormal)
def _kl_diagonal_full_covariance(p: Independent, q: MultivariateNormal) -> torch.Tensor:
    """KL(N(μ, diag σ²) ‖ N(m, Σ)): the diagonal Gaussian is the full-covariance one with L = diag σ."""
    if not (isinstance(p.base_dist, Normal) and p.reinterpreted_batch_ndims == 1):
        raise NotImplementedError
    as_full = MultivariateNormal(p.base_dist.loc, scale_tril=torch.diag_embed(p.base_dist.scale), validate_args=False)
    return kl_divergence(as_full, q)


@register_kl(Beta, Uniform)
def _kl_beta_uniform(p: Beta, q: Uniform) -> torch.Tensor:
    # Replaces torch's entry, whose support mask fails to broadcast a (J,) prior against (M, J).
    result = -p.entropy() + torch.log(q.high - q.low)
    outside = (q.low > 0) | (q.high < 1)
    return torch.where(outside, torch.full_like(result, math.inf), result)


__all__ = ["kl_divergence"]
