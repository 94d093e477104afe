"""Families reached by composition (paper §2.4, third route) that ``torch.distributions`` lacks.

Torch provides the others with a pathwise ``rsample``: LogNormal (exp of a Gaussian), Gamma,
Chi2, Beta, Dirichlet and FisherSnedecor (a ratio of χ² draws) — its Gamma sampler
differentiates the draw implicitly, which also covers non-integer shapes. Here is the Erlang
distribution, the Gamma of integer shape k, drawn as §2.4 says: a sum of k exponentials, each by
its inverse CDF.
"""

from __future__ import annotations

import torch
from torch.distributions import Gamma, constraints

from .inverse_cdf import open_uniform


class Erlang(Gamma):
    """Erlang(k, rate λ): the Gamma(k, λ) of integer shape k; z = −(1/λ) Σ_{i=1..k} log uᵢ.

    ``log_prob``, moments, entropy and the Gamma KL registry entries are Gamma's.
    """

    arg_constraints = {"concentration": constraints.positive_integer, "rate": constraints.positive}

    def __init__(self, shape: int, rate, validate_args=None):
        if int(shape) != shape or shape < 1:
            raise ValueError(f"Erlang shape must be a positive integer, got {shape}")
        self.shape_k = int(shape)
        rate = torch.as_tensor(rate, dtype=torch.get_default_dtype()) if not torch.is_tensor(rate) else rate
        super().__init__(torch.full_like(rate, float(shape)), rate, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Erlang, _instance)
        new.shape_k = self.shape_k
        return super().expand(batch_shape, _instance=new)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        uniforms = open_uniform(torch.Size((self.shape_k,)) + shape, self.rate)
        return -torch.log(uniforms).sum(0) / self.rate
