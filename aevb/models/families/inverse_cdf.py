"""Families reparameterised by a tractable inverse CDF (paper §2.4, first route) that
``torch.distributions`` lacks: z = F⁻¹(u; φ) with u ~ U(0, 1), differentiable in φ.

Torch already provides Exponential, Cauchy, Pareto, Weibull and Gumbel with pathwise ``rsample``;
the builders (:mod:`aevb.models.families.builders`) use those. Every class here follows torch's style:
``arg_constraints``, ``support``, ``rsample``, ``log_prob`` (nats), ``cdf``/``icdf`` and the
moments where they have a closed form. Uniform draws are kept inside (0, 1) (at least the
smallest positive normal number away from 0) so that no logarithm of 0 is ever taken.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import constraints

from .base import ElementwiseDistribution, SymmetricAboutLoc

EULER_GAMMA = 0.5772156649015329


def open_uniform(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """u ~ U(0, 1) of ``shape``, dtype and device of ``like``, with 0 excluded (clamped to the
    smallest normal number) and 1 never drawn (torch.rand draws from [0, 1))."""
    u = torch.rand(shape, dtype=like.dtype, device=like.device)
    return u.clamp(min=torch.finfo(like.dtype).tiny)


class Logistic(SymmetricAboutLoc, ElementwiseDistribution):
    """Logistic(loc μ, scale s): F(z) = sigmoid((z − μ)/s); F⁻¹(u) = μ + s·logit(u).

    Both an inverse-CDF and a location-scale family (§2.4 names it under both routes).
    Mean μ, variance s²π²/3, entropy log s + 2.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __init__(self, loc, scale, validate_args=None):
        super().__init__(loc, scale, validate_args=validate_args)

    def rsample(self, sample_shape=torch.Size()):
        u = open_uniform(self._extended_shape(sample_shape), self.loc)
        return self.icdf(u)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        standard = (value - self.loc) / self.scale
        # log f = −t − log s − 2 log(1 + e^{−t}), written symmetrically so no exp overflows.
        return -standard.abs() - 2 * torch.nn.functional.softplus(-standard.abs()) - self.scale.log()

    def cdf(self, value):
        return torch.sigmoid((value - self.loc) / self.scale)

    def icdf(self, value):
        return self.loc + self.scale * (torch.log(value) - torch.log1p(-value))

    @property
    def variance(self):
        return self.scale.square() * (math.pi**2 / 3)

    def entropy(self):
        return self.scale.log() + 2.0


class Rayleigh(ElementwiseDistribution):
    """Rayleigh(scale σ) on (0, ∞): F(z) = 1 − exp(−z²/2σ²); z = σ √(−2 log u).

    Mean σ √(π/2), variance (4 − π)σ²/2, entropy 1 + log(σ/√2) + γ/2.
    """

    arg_constraints = {"scale": constraints.positive}
    support = constraints.positive
    has_rsample = True

    def __init__(self, scale, validate_args=None):
        super().__init__(scale, validate_args=validate_args)

    def rsample(self, sample_shape=torch.Size()):
        # F⁻¹(1 − u) with 1 − u ~ U(0, 1): the same distribution, one log1p fewer.
        u = open_uniform(self._extended_shape(sample_shape), self.scale)
        return self.scale * torch.sqrt(-2 * torch.log(u))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return value.log() - 2 * self.scale.log() - value.square() / (2 * self.scale.square())

    def cdf(self, value):
        return -torch.expm1(-value.square() / (2 * self.scale.square()))

    def icdf(self, value):
        return self.scale * torch.sqrt(-2 * torch.log1p(-value))

    @property
    def mean(self):
        return self.scale * math.sqrt(math.pi / 2)

    @property
    def mode(self):
        return self.scale

    @property
    def variance(self):
        return self.scale.square() * ((4 - math.pi) / 2)

    def entropy(self):
        return 1 + torch.log(self.scale / math.sqrt(2)) + EULER_GAMMA / 2


class Reciprocal(ElementwiseDistribution):
    """Reciprocal (log-uniform) on [low, high], 0 < low < high: density 1/(z log(high/low));
    F⁻¹(u) = low·(high/low)^u, i.e. log z ~ U(log low, log high)."""

    arg_constraints = {"low": constraints.positive, "high": constraints.positive}
    has_rsample = True

    def __init__(self, low, high, validate_args=None):
        super().__init__(low, high, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.interval(self.low, self.high)

    @property
    def _log_ratio(self):
        return self.high.log() - self.low.log()

    def rsample(self, sample_shape=torch.Size()):
        return self.icdf(open_uniform(self._extended_shape(sample_shape), self.low))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        inside = (value >= self.low) & (value <= self.high)
        density = -value.log() - self._log_ratio.log()
        return torch.where(inside, density, torch.full_like(density, -math.inf))

    def cdf(self, value):
        return ((value.log() - self.low.log()) / self._log_ratio).clamp(0, 1)

    def icdf(self, value):
        return torch.exp(self.low.log() + value * self._log_ratio)

    @property
    def mean(self):
        return (self.high - self.low) / self._log_ratio

    @property
    def variance(self):
        return (self.high.square() - self.low.square()) / (2 * self._log_ratio) - self.mean.square()

    def entropy(self):
        # −E[log f] = E[log z] + log log(high/low), E[log z] = the midpoint of the log-interval.
        return 0.5 * (self.low.log() + self.high.log()) + self._log_ratio.log()


class Gompertz(ElementwiseDistribution):
    """Gompertz(concentration c, scale s) on (0, ∞) in scipy's parameterisation
    (``scipy.stats.gompertz(c, scale=s)``): F(z) = 1 − exp(−c (e^{z/s} − 1));
    F⁻¹(u) = s·log(1 − log(1 − u)/c), drawn as s·log1p(E/c) with E = −log u ~ Exp(1).

    Its mean needs the exponential integral (s e^c E₁(c)); torch has none, so ``mean`` and
    ``variance`` are not provided (the median ``icdf(0.5)`` is).
    """

    arg_constraints = {"concentration": constraints.positive, "scale": constraints.positive}
    support = constraints.positive
    has_rsample = True

    def __init__(self, concentration, scale, validate_args=None):
        super().__init__(concentration, scale, validate_args=validate_args)

    def rsample(self, sample_shape=torch.Size()):
        exponential = -torch.log(open_uniform(self._extended_shape(sample_shape), self.scale))
        return self.scale * torch.log1p(exponential / self.concentration)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        standard = value / self.scale
        return self.concentration.log() - self.scale.log() + standard - self.concentration * torch.expm1(standard)

    def cdf(self, value):
        return -torch.expm1(-self.concentration * torch.expm1(value / self.scale))

    def icdf(self, value):
        return self.scale * torch.log1p(-torch.log1p(-value) / self.concentration)
