"""The SGVB estimators of the variational lower bound (paper §2.3).

For one datapoint x the bound is 𝓛(θ, φ; x) = E_q[log p(x, z) − log q(z|x)]
= −KL(q(z|x) ‖ p(z)) + E_q[log p(x|z)]. With z⁽ˡ⁾ = g_φ(ε⁽ˡ⁾, x) (``q.rsample``):

* estimator A (eq. 6), generic: (1/L) Σ_l log p(x, z⁽ˡ⁾) − log q(z⁽ˡ⁾|x). Needs only
  ``rsample`` and ``log_prob`` of the approximate posterior, so it serves any reparameterisable
  family;
* estimator B (eq. 7): −KL(q(z|x) ‖ p(z)) + (1/L) Σ_l log p(x|z⁽ˡ⁾), with the KL in closed form
  from the ``torch.distributions`` KL registry (App. B for Gaussians); usually lower variance.

Both are unbiased for 𝓛 and differentiable in θ and φ through the reparameterisation. The
minibatch estimator of the full-data bound is (N/M) Σ_{i ∈ minibatch} 𝓛̃(x⁽ⁱ⁾) (eq. 8).

A model passed here needs three things (see :class:`aevb.models.vae.VAE`): ``encode(x)`` → q(z|x) with
batch shape (M,); ``decode(z)`` → p(x|z) with event shape (D,); ``prior()`` → p(z).

These are the references: log p(x|z) is ``model.decode(z).log_prob(x)``
(:func:`decoder_log_likelihood`). Every estimator takes it as ``log_likelihood``, so that
evaluation, which needs no gradient, can pass a faster function of the same value
(:func:`aevb.evaluation.decoding.decoder_log_prob`) while this module imports no engine, kernel
or evaluation code.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

import torch
from torch.distributions import Distribution, kl_divergence

from ..models.distributions import draw_posterior
from ..validation import require_count


class LatentVariableModel(Protocol):
    def encode(self, x: torch.Tensor) -> Distribution: ...
    def decode(self, z: torch.Tensor) -> Distribution: ...
    def prior(self) -> Distribution: ...


#: log p(x|z) of a model: (model, z (L, M, J), x (M, D)) → (L, M), nats.
LogLikelihood = Callable[[LatentVariableModel, torch.Tensor, torch.Tensor], torch.Tensor]


def decoder_log_likelihood(model: LatentVariableModel, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z), (L, M) for z (L, M, J) and x (M, D), nats: ``model.decode(z).log_prob(x)``, the
    reference. A model whose datapoints hold more than x (a conditional VAE's rows [x, one-hot(y)])
    computes it itself: ``model.decoder_log_prob(z, rows)``."""
    own = getattr(model, "decoder_log_prob", None)
    return own(z, x) if own is not None else model.decode(z).log_prob(x)


def log_importance_weights(
    model: LatentVariableModel,
    x: torch.Tensor,
    num_samples: int,
    reparameterize: bool = True,
    posterior=None,
    prior_mixture: float = 0.0,
    noise: torch.Tensor | None = None,
    log_likelihood: LogLikelihood = decoder_log_likelihood,
) -> torch.Tensor:
    """log w = log p(x, z) − log r(z|x) for z ~ r: shape (k, M) for x of shape (M, D), nats.

    The proposal r is the encoder q(z|x), or with ``prior_mixture = α > 0`` the defensive mixture
    (1 − α) q(z|x) + α p(z) (Hesterberg, 1995): its weights are bounded by p(x|z)/α, so posterior
    mass that the encoder misses is still found (for sampling only; no reparameterisation). α = 1
    is the prior alone. ``log_likelihood``: log p(x|z) (the reference by default; see the module).
    """
    num_samples = require_count(num_samples, "num_samples")
    prior = model.prior()
    if prior_mixture >= 1:  # the prior alone: w = p(x|z)
        return log_likelihood(model, prior.sample((num_samples, x.shape[0])), x)
    posterior = model.encode(x) if posterior is None else posterior
    if prior_mixture <= 0:
        if reparameterize:
            z = draw_posterior(posterior, num_samples, noise)
        else:
            z = posterior.sample((num_samples,))
        return log_likelihood(model, z, x) + prior.log_prob(z) - posterior.log_prob(z)
    z = posterior.sample((num_samples,))
    from_prior = torch.rand(z.shape[:-1], device=z.device) < prior_mixture
    z = torch.where(from_prior.unsqueeze(-1), prior.sample(z.shape[:-1]), z)
    log_prior = prior.log_prob(z)
    log_proposal = torch.logaddexp(
        math.log1p(-prior_mixture) + _log_prob_on_support(posterior, z), math.log(prior_mixture) + log_prior
    )
    return log_likelihood(model, z, x) + log_prior - log_proposal


def _log_prob_on_support(distribution: Distribution, z: torch.Tensor) -> torch.Tensor:
    """log q(z), and −∞ where z lies outside q's support: a prior draw can land there, and without
    argument validation torch returns a finite density (Pareto below its scale: +33 nats at
    z = 0.01, scale 1) or NaN, either of which would bias the mixture's weights."""
    return torch.where(distribution.support.check(z), distribution.log_prob(z), -math.inf)


def iwae_bound(
    model: LatentVariableModel,
    x: torch.Tensor,
    num_samples: int = 1,
    noise: torch.Tensor | None = None,
    log_likelihood: LogLikelihood = decoder_log_likelihood,
) -> torch.Tensor:
    """The k-sample importance-weighted bound, k = ``num_samples``: (M,), nats.

    log (1/k) Σ_k w_k; differentiable through the reparameterisation; equals estimator A at k = 1.
    ``noise``: optional ε (k, M, J) instead of fresh draws; ``log_likelihood``: log p(x|z).
    """
    log_w = log_importance_weights(model, x, num_samples, noise=noise, log_likelihood=log_likelihood)
    return torch.logsumexp(log_w, dim=0) - math.log(num_samples)


def estimator_a(
    model: LatentVariableModel,
    x: torch.Tensor,
    num_samples: int = 1,
    noise: torch.Tensor | None = None,
    log_likelihood: LogLikelihood = decoder_log_likelihood,
) -> torch.Tensor:
    """SGVB estimator A (eq. 6): per-datapoint bound, shape (M,) for x of shape (M, D), nats.

    ``noise``: optional ε (L, M, J) to use instead of fresh draws (see :func:`draw_posterior`);
    ``log_likelihood``: log p(x|z) (the reference by default; see the module).
    """
    num_samples = require_count(num_samples, "num_samples")
    posterior = model.encode(x)
    z = draw_posterior(posterior, num_samples, noise)  # (L, M, J)
    log_joint = log_likelihood(model, z, x) + model.prior().log_prob(z)
    return (log_joint - posterior.log_prob(z)).mean(dim=0)


def estimator_b(
    model: LatentVariableModel,
    x: torch.Tensor,
    num_samples: int = 1,
    noise: torch.Tensor | None = None,
    log_likelihood: LogLikelihood = decoder_log_likelihood,
) -> torch.Tensor:
    """SGVB estimator B (eq. 7): per-datapoint bound, shape (M,) for x of shape (M, D), nats.

    ``noise``: optional ε (L, M, J) to use instead of fresh draws (see :func:`draw_posterior`);
    ``log_likelihood``: log p(x|z) (the reference by default; see the module).
    """
    num_samples = require_count(num_samples, "num_samples")
    posterior = model.encode(x)
    z = draw_posterior(posterior, num_samples, noise)  # (L, M, J)
    reconstruction = log_likelihood(model, z, x).mean(dim=0)  # (M,)
    return reconstruction - kl_divergence(posterior, model.prior())


Estimator = Callable[..., torch.Tensor]  # (model, x (M, D), L, noise=None, log_likelihood=...) -> (M,) nats

#: Estimators by the names the paper gives them, plus the importance-weighted bound of Burda et
#: al. (2015) with k = L samples, which is estimator A at k = 1; ``--estimator`` takes these keys.
ESTIMATORS: dict[str, Estimator] = {"A": estimator_a, "B": estimator_b, "IWAE": iwae_bound}


def get_estimator(name: str) -> Estimator:
    """Look up an estimator by name ('A', 'B' or 'IWAE', case-insensitive)."""
    try:
        return ESTIMATORS[name.upper()]
    except KeyError:
        from ..errors import AevbError

        raise AevbError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}") from None


def bound_estimator(training_estimator: str) -> str:
    """The estimator of the plain lower bound 𝓛 to report for a model trained with another.

    IWAE trains a different objective; its k = 1 case, estimator A, is the bound itself.
    """
    name = training_estimator.upper()
    return "A" if name == "IWAE" else name


def minibatch_bound(per_datapoint: torch.Tensor, dataset_size: int) -> torch.Tensor:
    """Minibatch estimate of the full-data bound 𝓛(θ, φ; X) ≈ (N/M) Σ_i 𝓛̃(x⁽ⁱ⁾) (eq. 8), nats.

    Args:
        per_datapoint: (M,) per-datapoint bound estimates.
        dataset_size: N, the number of datapoints in the full training set.
    """
    dataset_size = require_count(dataset_size, "dataset_size")
    return per_datapoint.sum() * (dataset_size / per_datapoint.shape[0])
