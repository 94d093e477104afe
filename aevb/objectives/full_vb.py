"""The SGVB estimator of full VB's bound (App. F, Example F.1): one draw θ̃ ~ q(θ) per minibatch,
estimator B inside it, and the closed-form KL of q(θ) from its prior. The model is
:class:`aevb.models.full_vb.FullVBVAE`; the algorithm that maximises this bound,
:class:`aevb.training.full_vb.FullVariationalBayes`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.full_vb import DecoderParameters, FullVBVAE
from .estimators import estimator_b


@dataclass(frozen=True)
class FullBoundEstimate:
    """One SGVB estimate of the full bound 𝓛(φ; X) from a minibatch (App. F).

    ``datapoint_bounds`` (M,): estimator B of 𝓛_θ̃(x⁽ⁱ⁾) at the drawn θ̃, nats; ``parameter_kl``:
    KL(q(θ) ‖ p(θ)), nats for the whole data set of ``dataset_size`` points.
    """

    datapoint_bounds: torch.Tensor
    parameter_kl: torch.Tensor
    dataset_size: int

    @property
    def per_datapoint(self) -> torch.Tensor:
        """𝓛(φ; X)/N ≈ (1/M) Σ_i 𝓛̃_θ̃(x⁽ⁱ⁾) − KL/N: 0-dim, nats per datapoint."""
        return self.datapoint_bounds.mean() - self.parameter_kl / self.dataset_size

    @property
    def total(self) -> torch.Tensor:
        """𝓛(φ; X) ≈ (N/M) Σ_i 𝓛̃_θ̃(x⁽ⁱ⁾) − KL: 0-dim, nats (the paper's form)."""
        return self.per_datapoint * self.dataset_size


def full_bound_estimate(
    model: FullVBVAE,
    x: torch.Tensor,
    dataset_size: int,
    prior_precision: float = 1.0,
    num_samples: int = 1,
    noise: torch.Tensor | None = None,
    parameter_noise: DecoderParameters | None = None,
) -> FullBoundEstimate:
    """The SGVB estimator of the full bound (App. F, Example F.1) on minibatch x (M, D) of a data
    set of N = ``dataset_size`` points: one draw θ̃ ~ q(θ) for the minibatch, estimator B with L =
    ``num_samples`` draws of z per point under it, and the closed-form KL of q(θ) from N(0, I/λ).
    Unbiased for 𝓛(φ; X) when x is a uniformly random minibatch; differentiable in every
    parameter. ``noise`` ε (L, M, J) and ``parameter_noise`` ζ (by name) replace fresh draws."""
    theta = model.draw_decoder_parameters(parameter_noise)
    with model.decoder_parameters(theta):
        bounds = estimator_b(model, x, num_samples, noise=noise)
    return FullBoundEstimate(bounds, model.decoder_parameter_kl(prior_precision), dataset_size)
