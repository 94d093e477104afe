"""How each §2.4 family is built: its approximate posterior q(z|x) from an encoder's unconstrained
outputs, and its standard prior p(z). :mod:`.registry` names them and says which pairs are allowed.

An encoder for family F has one linear head of ``F.num_outputs(J)`` values per datapoint; for a
factorised family these are ``F.parameters`` blocks of J values each (one per latent dimension,
in that order), and the posterior is an ``Independent`` with batch shape (M,) and event shape
(J,). Constraints keep every parameter numerically safe:

* scales are exp(½ log σ²) with log σ² bounded exactly like the Gaussian encoder's
  (:func:`aevb.models.networks.bounded_log_variance`, ``--log-variance-bound``), so a zero output is scale 1;
* shapes are softplus(raw) + a floor, and where a moment must exist for the KL to any prior to be
  finite, the floor says so (Student-t ν > 2, Pareto α > 2, F's d₂ > 4: finite variance, which
  a Gaussian, Rayleigh or Weibull prior's log-density needs).

Every posterior builder takes ``(raw (M, num_outputs(J)), bound)``, the log-variance bound or None;
every prior builder takes ``zeros``, a (J,) zero tensor of the prior's dtype and device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.distributions import (
    Beta,
    Cauchy,
    Chi2,
    Dirichlet,
    Distribution,
    Exponential,
    FisherSnedecor,
    Gamma,
    Gumbel,
    Independent,
    Laplace,
    LogNormal,
    MultivariateNormal,
    Normal,
    Pareto,
    StudentT,
    Weibull,
)

from ..networks import bounded_log_variance
from .composition import Erlang
from .inverse_cdf import Gompertz, Logistic, Rayleigh, Reciprocal
from .location_scale import MultivariateStudentT, Triangular, Uniform

SHAPE_FLOOR = 0.1  # smallest shape parameter: keeps Gamma-type draws away from underflow
STUDENT_T_PRIOR_DF = 3.0  # the Student-t priors' ν: the smallest integer with a finite variance
ERLANG_SHAPE = 2  # the Erlang family's fixed integer shape k (k = 1 is the exponential)
WEIBULL_PRIOR_SHAPE = 2.0  # the Weibull prior's shape (shape 1 would repeat the exponential prior)
CHI2_PRIOR_DF = 2.0  # the χ² prior's degrees of freedom


def scale_from(raw: torch.Tensor, bound: float | None) -> torch.Tensor:
    """A positive scale from an unconstrained output, as the Gaussian encoder makes σ:
    exp(½ log σ²) with log σ² = B·tanh(raw/B) (raw itself when ``bound`` is None)."""
    return torch.exp(0.5 * bounded_log_variance(raw, bound))


def shape_from(raw: torch.Tensor, floor: float = SHAPE_FLOOR) -> torch.Tensor:
    """A shape parameter > ``floor`` from an unconstrained output: softplus(raw) + floor."""
    return F.softplus(raw) + floor


def _factorised(base: Distribution) -> Independent:
    return Independent(base, 1, validate_args=False)


def _lower_triangular(diagonal: torch.Tensor, off_diagonal: torch.Tensor) -> torch.Tensor:
    """(..., J) positive diagonal and (..., J(J−1)/2) strictly-lower entries → (..., J, J) L."""
    dim = diagonal.shape[-1]
    rows, columns = torch.tril_indices(dim, dim, offset=-1, device=diagonal.device)
    strictly_lower = diagonal.new_zeros(diagonal.shape + (dim,))
    strictly_lower[..., rows, columns] = off_diagonal  # differentiable in off_diagonal
    return strictly_lower + torch.diag_embed(diagonal)


def _blocks(raw: torch.Tensor, count: int) -> tuple[torch.Tensor, ...]:
    return raw.chunk(count, dim=-1)


# --- posteriors from unconstrained outputs ---------------------------------------------------


def gaussian_posterior(raw, bound):
    """N(mean, σ²) per dimension from [mean | raw log σ²]: the paper's encoder (§3)."""
    mean, log_var = _blocks(raw, 2)
    return _factorised(Normal(mean, scale_from(log_var, bound), validate_args=False))


def _location_scale(distribution):
    """The builder of ``distribution(loc, scale)`` per dimension from [loc | raw log scale²]."""

    def build(raw, bound):
        loc, raw_scale = _blocks(raw, 2)
        return _factorised(distribution(loc, scale_from(raw_scale, bound), validate_args=False))

    return build


laplace_posterior = _location_scale(Laplace)
triangular_posterior = _location_scale(Triangular)
logistic_posterior = _location_scale(Logistic)
cauchy_posterior = _location_scale(Cauchy)
gumbel_posterior = _location_scale(Gumbel)
log_normal_posterior = _location_scale(LogNormal)


def student_t_posterior(raw, bound):
    """Student-t(ν > 2, loc, scale) per dimension from [loc | raw log scale² | raw ν]."""
    loc, raw_scale, raw_df = _blocks(raw, 3)
    return _factorised(StudentT(shape_from(raw_df, 2.0), loc, scale_from(raw_scale, bound), validate_args=False))


def uniform_posterior(raw, bound):
    """U(centre − w, centre + w) per dimension from [centre | raw log w²]."""
    centre, raw_half_width = _blocks(raw, 2)
    half_width = scale_from(raw_half_width, bound)
    return _factorised(Uniform(centre - half_width, centre + half_width, validate_args=False))


def _full_covariance_parts(raw, latent_dim, bound):
    mean, log_var = raw[..., :latent_dim], raw[..., latent_dim : 2 * latent_dim]
    off_diagonal = raw[..., 2 * latent_dim : 2 * latent_dim + latent_dim * (latent_dim - 1) // 2]
    return mean, _lower_triangular(scale_from(log_var, bound), off_diagonal)


def _latent_dim_of_full(outputs: int, extra: int) -> int:
    """J from the head width of a full-covariance family: outputs = 2J + J(J−1)/2 + extra."""
    return int(round((-3 + math.sqrt(9 + 8 * (outputs - extra))) / 2))


def full_covariance_gaussian_posterior(raw, bound):
    """N(mean, L Lᵀ) from [mean | raw log diag(L)² | L's strictly-lower entries, row by row]."""
    dim = _latent_dim_of_full(raw.shape[-1], 0)
    mean, tril = _full_covariance_parts(raw, dim, bound)
    return MultivariateNormal(mean, scale_tril=tril, validate_args=False)


def multivariate_student_t_posterior(raw, bound):
    """The elliptical t(ν > 2, loc, L) from the full-covariance Gaussian's head and one raw ν."""
    dim = _latent_dim_of_full(raw.shape[-1], 1)
    mean, tril = _full_covariance_parts(raw, dim, bound)
    return MultivariateStudentT(shape_from(raw[..., -1], 2.0), mean, tril, validate_args=False)


def exponential_posterior(raw, bound):
    """Exponential(rate 1/scale) per dimension from [raw log scale²]."""
    return _factorised(Exponential(1 / scale_from(raw, bound), validate_args=False))


def rayleigh_posterior(raw, bound):
    """Rayleigh(scale) per dimension from [raw log scale²]."""
    return _factorised(Rayleigh(scale_from(raw, bound), validate_args=False))


def pareto_posterior(raw, bound):
    """Pareto(scale, α > 2) per dimension from [raw log scale² | raw α]."""
    raw_scale, raw_alpha = _blocks(raw, 2)
    return _factorised(Pareto(scale_from(raw_scale, bound), shape_from(raw_alpha, 2.0), validate_args=False))


def weibull_posterior(raw, bound):
    """Weibull(scale, shape) per dimension from [raw log scale² | raw shape]."""
    raw_scale, raw_shape = _blocks(raw, 2)
    return _factorised(Weibull(scale_from(raw_scale, bound), shape_from(raw_shape), validate_args=False))


def reciprocal_posterior(raw, bound):
    """Reciprocal on (low, low·ratio) per dimension from [raw log low² | raw log ratio]."""
    raw_low, raw_log_ratio = _blocks(raw, 2)
    low = scale_from(raw_low, bound)
    return _factorised(Reciprocal(low, low * torch.exp(shape_from(raw_log_ratio, 1e-3)), validate_args=False))


def gompertz_posterior(raw, bound):
    """Gompertz(shape, scale) per dimension from [raw log scale² | raw shape]."""
    raw_scale, raw_shape = _blocks(raw, 2)
    return _factorised(Gompertz(shape_from(raw_shape), scale_from(raw_scale, bound), validate_args=False))


def erlang_posterior(raw, bound):
    """Erlang(k = ERLANG_SHAPE, rate 1/scale) per dimension from [raw log scale²]."""
    return _factorised(Erlang(ERLANG_SHAPE, 1 / scale_from(raw, bound), validate_args=False))


def gamma_posterior(raw, bound):
    """Gamma(shape, rate 1/scale) per dimension from [raw log scale² | raw shape]."""
    raw_scale, raw_shape = _blocks(raw, 2)
    return _factorised(Gamma(shape_from(raw_shape), 1 / scale_from(raw_scale, bound), validate_args=False))


def chi_squared_posterior(raw, bound):
    """χ²(df) per dimension from [raw df]."""
    return _factorised(Chi2(shape_from(raw), validate_args=False))


def fisher_posterior(raw, bound):
    """F(d₁, d₂ > 4) per dimension from [raw d₁ | raw d₂]."""
    raw_df1, raw_df2 = _blocks(raw, 2)
    return _factorised(FisherSnedecor(shape_from(raw_df1), shape_from(raw_df2, 4.0), validate_args=False))


def beta_posterior(raw, bound):
    """Beta(α, β) per dimension from [raw α | raw β]."""
    raw_a, raw_b = _blocks(raw, 2)
    return _factorised(Beta(shape_from(raw_a), shape_from(raw_b), validate_args=False))


def dirichlet_posterior(raw, bound):
    """Dirichlet(concentration) over the J coordinates from [raw concentration]."""
    return Dirichlet(shape_from(raw), validate_args=False)


# --- standard priors (zeros: a (J,) zero tensor of the right dtype and device) -----------------


def _ones(zeros):
    return torch.ones_like(zeros)


def gaussian_prior(zeros):
    """N(0, I), factorised."""
    return _factorised(Normal(zeros, _ones(zeros), validate_args=False))


def full_covariance_gaussian_prior(zeros):
    """N(0, I) as a multivariate normal."""
    return MultivariateNormal(zeros, scale_tril=torch.diag(_ones(zeros)), validate_args=False)


def laplace_prior(zeros):
    """Laplace(0, 1) per dimension."""
    return _factorised(Laplace(zeros, _ones(zeros), validate_args=False))


def student_t_prior(zeros):
    """Student-t(ν = STUDENT_T_PRIOR_DF, 0, 1) per dimension."""
    return _factorised(StudentT(STUDENT_T_PRIOR_DF, zeros, _ones(zeros), validate_args=False))


def multivariate_student_t_prior(zeros):
    """The elliptical t(ν = STUDENT_T_PRIOR_DF, 0, I)."""
    return MultivariateStudentT(
        torch.tensor(STUDENT_T_PRIOR_DF, dtype=zeros.dtype, device=zeros.device),
        zeros,
        torch.diag(_ones(zeros)),
        validate_args=False,
    )


def uniform_prior(zeros):
    """U(0, 1) per dimension."""
    return _factorised(Uniform(zeros, _ones(zeros), validate_args=False))


def logistic_prior(zeros):
    """Logistic(0, 1) per dimension."""
    return _factorised(Logistic(zeros, _ones(zeros), validate_args=False))


def cauchy_prior(zeros):
    """Cauchy(0, 1) per dimension."""
    return _factorised(Cauchy(zeros, _ones(zeros), validate_args=False))


def exponential_prior(zeros):
    """Exponential(1) per dimension."""
    return _factorised(Exponential(_ones(zeros), validate_args=False))


def rayleigh_prior(zeros):
    """Rayleigh(1) per dimension."""
    return _factorised(Rayleigh(_ones(zeros), validate_args=False))


def weibull_prior(zeros):
    """Weibull(1, shape WEIBULL_PRIOR_SHAPE) per dimension."""
    return _factorised(Weibull(_ones(zeros), WEIBULL_PRIOR_SHAPE * _ones(zeros), validate_args=False))


def erlang_prior(zeros):
    """Erlang(k = ERLANG_SHAPE, rate 1) per dimension."""
    return _factorised(Erlang(ERLANG_SHAPE, _ones(zeros), validate_args=False))


def log_normal_prior(zeros):
    """LogNormal(0, 1) per dimension."""
    return _factorised(LogNormal(zeros, _ones(zeros), validate_args=False))


def gamma_prior(zeros):
    """Gamma(1, 1) per dimension."""
    return _factorised(Gamma(_ones(zeros), _ones(zeros), validate_args=False))


def chi_squared_prior(zeros):
    """χ²(CHI2_PRIOR_DF) per dimension."""
    return _factorised(Chi2(CHI2_PRIOR_DF * _ones(zeros), validate_args=False))


def beta_prior(zeros):
    """Beta(1, 1) per dimension."""
    return _factorised(Beta(_ones(zeros), _ones(zeros), validate_args=False))


def dirichlet_prior(zeros):
    """Dirichlet(1, ..., 1)."""
    return Dirichlet(_ones(zeros), validate_args=False)
