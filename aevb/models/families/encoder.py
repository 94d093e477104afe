"""A family in a model: the encoder q_φ(z|x) of any registered family, the representative z of a
posterior (for reconstructions), and the prior's inverse CDF (for the 2-D manifolds)."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Independent

from ..config import ModelConfig
from ..networks import build_network
from .registry import get_family


def posterior_centre(posterior: Distribution) -> torch.Tensor:
    """A representative z of q(z|x), (..., J): the mean, or the median where the mean is undefined
    (Cauchy) or has no closed form (Gompertz). Used for reconstructions."""
    try:
        mean = posterior.mean
        if bool(torch.isfinite(mean).all()):
            return mean
    except NotImplementedError:
        pass
    base = posterior.base_dist if isinstance(posterior, Independent) else posterior
    return base.icdf(_halves(base))


def _halves(base: Distribution) -> torch.Tensor:
    """0.5 in the batch shape, dtype and device of a univariate distribution (no random draw)."""
    like = _a_parameter(base)
    return torch.full(base.batch_shape, 0.5, dtype=like.dtype, device=like.device)


def _a_parameter(distribution: Distribution) -> torch.Tensor:
    """One of a distribution's parameter tensors, looking inside a transformed one's base
    (LogNormal keeps its loc and scale in a Normal)."""
    for value in vars(distribution).values():
        if torch.is_tensor(value):
            return value
    for value in vars(distribution).values():
        if isinstance(value, Distribution):
            return _a_parameter(value)
    raise AttributeError(f"{type(distribution).__name__} holds no parameter tensor")


def prior_icdf(prior: Distribution):
    """z ↦ the prior's per-dimension inverse CDF, for the 2-D manifold grid (Figs. 4–5), or None
    when the prior is not factorised or has no inverse CDF."""
    if not isinstance(prior, Independent):
        return None
    base = prior.base_dist
    try:
        base.icdf(_halves(base))
    except (NotImplementedError, AttributeError):
        return None
    # The prior is i.i.d. over dimensions: the first marginal's inverse CDF serves the grid.
    return lambda quantiles: base.icdf(quantiles[:, None].expand(-1, base.batch_shape[0]))[:, 0]


class FamilyEncoder(nn.Module):
    """q_φ(z|x) of any registered family: the encoder network (App. C's MLP by default) with one linear head of the family's
    ``num_outputs(J)`` unconstrained values, mapped to the distribution by the registry."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.family = get_family(config.posterior)
        # The network body of any architecture (MLP, convolutional, conditional): only the head is the family's.
        self.net = build_network(config, "encoder", (self.family.num_outputs(config.latent_dim),))
        self.log_variance_bound = config.log_variance_bound

    def forward(self, x: torch.Tensor) -> Distribution:
        """x: (..., D) → q(z|x) with batch shape (...), event shape (J,)."""
        (raw,) = self.net(x)
        return self.family.posterior(raw, self.log_variance_bound)
