"""Location-scale families (paper §2.4, second route) that ``torch.distributions`` lacks:
z = location + scale·ε with ε drawn from the family's standard member.

Torch provides Normal, MultivariateNormal, Laplace, StudentT, Uniform and Cauchy; here are the
symmetric triangular distribution, the elliptical multivariate Student-t, and torch's Uniform with
its draws kept inside its support.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Chi2, Distribution, constraints
from torch.distributions import Uniform as TorchUniform

from .base import ElementwiseDistribution, SymmetricAboutLoc
from .inverse_cdf import open_uniform


def strictly_inside(value: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``value`` with the draws that rounding put on or beyond an end of (low, high) moved to the
    nearest float inside. low + u·(high − low) rounds to ``high`` in float32 for some u < 1, where
    the density is 0: log q = −∞, and an importance weight p/q of +∞ makes log p(x) +∞. (The
    moved draws are a set of measure zero; their gradient is dropped.)"""
    low, high = low.detach().expand_as(value), high.detach().expand_as(value)
    value = torch.where(value >= high, torch.nextafter(high, low), value)
    return torch.where(value <= low, torch.nextafter(low, high), value)


class Uniform(TorchUniform):
    """torch's ``Uniform`` whose draws never reach ``high``, where its ``log_prob`` is −∞
    (:func:`strictly_inside`); everything else, the KL registry's entries included, is torch's."""

    def rsample(self, sample_shape=torch.Size()):
        return strictly_inside(super().rsample(sample_shape), self.low, self.high)


class Triangular(SymmetricAboutLoc, ElementwiseDistribution):
    """Symmetric triangular on (loc − scale, loc + scale) with its peak at loc:
    density (1 − |z − loc|/scale)/scale. ε = u₁ − u₂ (u ~ U(0, 1)) is the standard member on (−1, 1).

    (``scipy.stats.triang(0.5, loc − scale, 2·scale)``.) Mean loc, variance scale²/6, entropy
    ½ + log scale.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = True

    def __init__(self, loc, scale, validate_args=None):
        super().__init__(loc, scale, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.interval(self.loc - self.scale, self.loc + self.scale)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        standard = open_uniform(shape, self.loc) - open_uniform(shape, self.loc)
        return strictly_inside(self.loc + self.scale * standard, self.loc - self.scale, self.loc + self.scale)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        height = 1 - (value - self.loc).abs() / self.scale
        # log of a non-positive height is −inf (outside) — clamp first so no NaN appears.
        return (
            torch.where(
                height > 0, height.clamp(min=torch.finfo(height.dtype).tiny).log(), torch.full_like(height, -math.inf)
            )
            - self.scale.log()
        )

    def cdf(self, value):
        standard = ((value - self.loc) / self.scale).clamp(-1, 1)
        return torch.where(standard < 0, 0.5 * (1 + standard).square(), 1 - 0.5 * (1 - standard).square())

    def icdf(self, value):
        standard = torch.where(value < 0.5, torch.sqrt(2 * value) - 1, 1 - torch.sqrt(2 * (1 - value)))
        return self.loc + self.scale * standard

    @property
    def variance(self):
        return self.scale.square() / 6

    def entropy(self):
        return 0.5 + self.scale.log()


class MultivariateStudentT(Distribution):
    """Elliptical multivariate Student-t t_ν(loc, Σ = L Lᵀ) with event shape (J,):
    z = loc + L ε √(ν/W), ε ~ N(0, I_J), W ~ χ²_ν — location-scale in (loc, L) around the standard
    member ε√(ν/W), whose χ² draw is itself reparameterised (so ν gets a pathwise gradient too).

    log f = log Γ((ν+J)/2) − log Γ(ν/2) − (J/2) log(νπ) − log|L| − ((ν+J)/2) log(1 + ‖L⁻¹(z−loc)‖²/ν).
    Mean loc (ν > 1), covariance Σ ν/(ν − 2) (ν > 2).

    Args:
        df: (...) degrees of freedom ν > 0.
        loc: (..., J).
        scale_tril: (..., J, J) lower-triangular with positive diagonal.
    """

    arg_constraints = {
        "df": constraints.positive,
        "loc": constraints.real_vector,
        "scale_tril": constraints.lower_cholesky,
    }
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, df, loc, scale_tril, validate_args=None):
        df = torch.as_tensor(df, dtype=loc.dtype, device=loc.device)
        batch_shape = torch.broadcast_shapes(df.shape, loc.shape[:-1], scale_tril.shape[:-2])
        event_shape = loc.shape[-1:]
        self.df = df.expand(batch_shape)
        self.loc = loc.expand(batch_shape + event_shape)
        self.scale_tril = scale_tril.expand(batch_shape + event_shape + event_shape)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(MultivariateStudentT, _instance)
        batch_shape = torch.Size(batch_shape)
        new.df = self.df.expand(batch_shape)
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new.scale_tril = self.scale_tril.expand(batch_shape + self.event_shape + self.event_shape)
        super(MultivariateStudentT, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        normal = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        chi2 = Chi2(self.df).rsample(sample_shape)  # (S..., B...)
        radial = torch.sqrt(self.df / chi2).unsqueeze(-1)
        return self.loc + radial * (self.scale_tril @ normal.unsqueeze(-1)).squeeze(-1)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        dim = self.event_shape[0]
        difference = (value - self.loc).unsqueeze(-1)
        tril = self.scale_tril.expand(difference.shape[:-2] + self.scale_tril.shape[-2:])
        whitened = torch.linalg.solve_triangular(tril, difference, upper=False).squeeze(-1)
        mahalanobis = whitened.square().sum(-1)
        half_log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        df = self.df
        return (
            torch.lgamma((df + dim) / 2)
            - torch.lgamma(df / 2)
            - 0.5 * dim * torch.log(df * math.pi)
            - half_log_det
            - 0.5 * (df + dim) * torch.log1p(mahalanobis / df)
        )

    @property
    def mean(self):
        return torch.where((self.df > 1).unsqueeze(-1), self.loc, torch.full_like(self.loc, math.nan))

    @property
    def covariance_matrix(self):
        factor = torch.where(self.df > 2, self.df / (self.df - 2), torch.full_like(self.df, math.inf))
        return factor[..., None, None] * (self.scale_tril @ self.scale_tril.transpose(-1, -2))

    @property
    def variance(self):
        return self.covariance_matrix.diagonal(dim1=-2, dim2=-1)
