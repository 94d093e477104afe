"""Distributions of the variational auto-encoder and their reparameterisation (paper §2.4, §3, App. B).

Everything here is a ``torch.distributions`` object so that the estimators of §2.3 need nothing
but the uniform protocol ``rsample`` / ``log_prob`` and the KL registry:

* the prior p(z) = N(0, I) (§3);
* the approximate posterior q(z|x) = N(μ, diag σ²), reparameterised as z = μ + σ ⊙ ε with
  ε ~ N(0, I) (§2.4, "location-scale" route) — ``Normal.rsample`` does exactly this;
* the observation models p(x|z): Bernoulli from logits (numerically stable: log p is computed
  as minus the binary cross-entropy with logits, never as log(sigmoid)), and a diagonal Gaussian.

All of them have event shape (D,) via :class:`~torch.distributions.Independent`, so ``log_prob``
returns one number per datapoint, in nats.

Validation of arguments is switched off on the hot path: the data are validated once at load
time (values in [0, 1] for a Bernoulli decoder), and grey-level MNIST is deliberately scored under
the Bernoulli likelihood (a cross-entropy), which ``Bernoulli``'s support check would reject.
"""

from __future__ import annotations

import torch
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

__all__ = [
    "standard_normal_prior",
    "diagonal_gaussian",
    "bernoulli_from_logits",
    "gaussian_kl_to_standard_normal",
    "kl_divergence",
    "draw_posterior",
]


def standard_normal_prior(latent_dim: int, device=None, dtype=torch.float32) -> Independent:
    """The prior p(z) = N(0, I) of §3: batch shape (), event shape (latent_dim,)."""
    zeros = torch.zeros(latent_dim, device=device, dtype=dtype)
    return Independent(Normal(zeros, torch.ones_like(zeros), validate_args=False), 1, validate_args=False)


def diagonal_gaussian(mean: torch.Tensor, log_var: torch.Tensor) -> Independent:
    """N(mean, diag exp(log_var)) with event shape (J,); ``rsample`` is z = μ + σ ⊙ ε (§2.4).

    Args:
        mean: (..., J) location μ.
        log_var: (..., J) log σ², the encoder's second output head (App. C).
    """
    scale = torch.exp(0.5 * log_var)
    return Independent(Normal(mean, scale, validate_args=False), 1, validate_args=False)


def bernoulli_from_logits(logits: torch.Tensor) -> Independent:
    """Factorised Bernoulli p(x|z) (App. C) with event shape (D,), parameterised by logits.

    ``log_prob(x)`` = Σ_d x_d log y_d + (1 − x_d) log(1 − y_d) with y = sigmoid(logits), computed
    stably; it accepts grey levels x ∈ [0, 1] as well as binary x.
    """
    return Independent(Bernoulli(logits=logits, validate_args=False), 1, validate_args=False)


def gaussian_kl_to_standard_normal(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) in closed form (App. B), summed over the last axis.

    −KL = ½ Σ_j (1 + log σ_j² − μ_j² − σ_j²). Shapes: (..., J) → (...), nats.
    """
    return -0.5 * torch.sum(1.0 + log_var - mean.square() - log_var.exp(), dim=-1)


def draw_posterior(posterior, num_samples: int, noise: torch.Tensor | None = None) -> torch.Tensor:
    """z⁽ˡ⁾ ~ q(z|x), l = 1..L, reparameterised (§2.4): (L, ..., J).

    Without ``noise`` this is ``posterior.rsample((L,))``. With ``noise`` — ε of shape (L, M, J),
    drawn by the caller, e.g. one shard of a minibatch's ε in multi-process training
    (:mod:`aevb.training.distributed`) — a location-scale posterior gives z = μ + σ ⊙ ε with exactly the
    arithmetic of ``Normal.rsample``; other families cannot take external ε and raise.
    """
    if noise is None:
        return posterior.rsample((num_samples,))
    base = posterior.base_dist if isinstance(posterior, Independent) else posterior
    if not isinstance(base, Normal):
        raise TypeError(f"external noise needs a location-scale posterior, got {type(base).__name__}")
    return base.loc + noise * base.scale
