"""Full variational Bayes over the decoder's parameters (paper Appendix F, Example F.1).

The generative parameters θ (every weight and bias of the decoder, and its per-dimension
log-variance where it has one) get a hyperprior p_α(θ) = N(0, I/λ) (λ = ``--prior-precision``,
1 in the paper) and a factorised Gaussian approximate posterior q_φ(θ) = N(μ_θ, diag σ_θ²). The
bound on the marginal likelihood of the whole training set X of N points is

    𝓛(φ; X) = E_q(θ)[Σ_i 𝓛_θ(x⁽ⁱ⁾)] − KL(q_φ(θ) ‖ p_α(θ)),

𝓛_θ(x) being the VAE's per-datapoint bound. Its SGVB estimate on a minibatch of M points
reparameterises θ̃ = μ_θ + σ_θ ⊙ ζ, ζ ~ N(0, I), and z̃ = μ_z + σ_z ⊙ ε, and takes both KL terms in
closed form (Example F.1; App. B per coordinate):

    (N/M) Σ_i [log p_θ̃(x⁽ⁱ⁾|z̃⁽ⁱ⁾) − KL(q(z|x⁽ⁱ⁾) ‖ p(z))] − KL(q(θ) ‖ p(θ)),

i.e. estimator B (eq. 7) inside, run with the drawn θ̃. Everything here is per datapoint: the
estimate above divided by N.

Only θ is under q, as in the paper: the encoder's parameters are variational parameters (part of
φ) and stay point estimates. For a like-for-like comparison with MAP training they keep MAP's
weight decay λ/N; μ_θ and σ_θ get none, since the KL term already is the prior on θ.

θ̃ is drawn once per minibatch and shared by its M points: the decoder then runs as one matrix
product per layer, as in MAP training (a draw per datapoint would need M copies of the weights and
batched products, M times the memory), and the estimate stays unbiased — only its variance is
larger (the points' terms are correlated through θ̃).

A :class:`FullVBVAE` keeps μ_θ as the decoder's own parameters — initialised like the MAP model's
from N(0, init_std²) (§5), so a run starts where the MAP run with the same seed starts — and log σ_θ in
``decoder_log_scale``. Its ``decode`` runs the decoder with a parameter draw
(``torch.func.functional_call``; no module is copied): the one fixed by
:meth:`FullVBVAE.decoder_parameters`, else a fresh draw per call, so every code path that decodes
(bounds, importance sampling) evaluates the model averaged over q(θ). ``decoder.mean`` — samples,
reconstructions and manifolds (``aevb sample``) — uses θ = μ_θ, the posterior mean.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from itertools import chain

import torch
from torch import nn
from torch.distributions import Distribution, Normal, kl_divergence
from torch.func import functional_call

from ..errors import AevbError
from .config import ModelConfig
from .vae import VAE

DecoderParameters = dict[str, torch.Tensor]  # decoder parameter name (as in named_parameters) → tensor


def _key(name: str) -> str:
    """A decoder parameter's name as a ParameterDict key (which cannot hold dots)."""
    return name.replace(".", "__")


class FullVBVAE(VAE):
    """The VAE of §3 with a factorised Gaussian posterior q(θ) = N(μ_θ, diag σ_θ²) over the decoder's
    parameters (App. F, Example F.1); the encoder's parameters are point estimates.

    μ_θ are ``self.decoder``'s parameters; ``decoder_log_scale[key]`` holds log σ_θ for the decoder
    parameter of the same name (dots as ``__``), of the same shape, initialised to
    log ``config.decoder_posterior_init_std``.
    """

    @classmethod
    def builds(cls, config: ModelConfig) -> bool:
        """Full VB's model: a Gaussian posterior over the decoder's parameters, no class labels."""
        return config.decoder_posterior == "gaussian" and config.num_classes is None

    def __init__(self, config: ModelConfig):
        if config.decoder_posterior != "gaussian":
            raise AevbError("a FullVBVAE needs decoder_posterior='gaussian'")
        super().__init__(config)
        self.decoder_log_scale = nn.ParameterDict(
            {_key(name): nn.Parameter(torch.empty_like(value)) for name, value in self.decoder.named_parameters()}
        )
        self._fixed: DecoderParameters | None = None
        self._reset_log_scale()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Encoder and μ_θ from N(0, init_std²), drawn exactly as :meth:`VAE.reset_parameters` draws
        the MAP model's (same order, same generator use); σ_θ = ``decoder_posterior_init_std``."""
        if self.shapes_only:
            return
        with torch.no_grad():
            for parameter in chain(self.encoder.parameters(), self.decoder.parameters()):
                parameter.normal_(0.0, self.config.init_std, generator=generator)
            if self.config.init == "anglepy":
                self._zero_as_the_authors_code()
        if "decoder_log_scale" in self._modules:  # (VAE.__init__ calls this before it exists)
            self._reset_log_scale()

    def _reset_log_scale(self) -> None:
        with torch.no_grad():
            for log_scale in self.decoder_log_scale.values():
                log_scale.fill_(math.log(self.config.decoder_posterior_init_std))

    def decoder_posterior(self) -> dict[str, Normal]:
        """q(θ), one ``Normal(μ, σ)`` per decoder parameter tensor (batch shape = its shape), by name."""
        return {
            name: Normal(mean, self.decoder_log_scale[_key(name)].exp(), validate_args=False)
            for name, mean in self.decoder.named_parameters()
        }

    def decoder_parameter_kl(self, prior_precision: float = 1.0) -> torch.Tensor:
        """KL(q(θ) ‖ p_α(θ)), p_α(θ) = N(0, I/λ), in closed form (the KL registry; App. B per
        coordinate), summed over every decoder parameter: a 0-dim tensor, nats (whole data set)."""
        if not prior_precision > 0:
            raise AevbError(f"full VB needs a proper prior on θ: prior precision must be > 0, got {prior_precision}")
        prior_std = prior_precision**-0.5
        total = torch.zeros((), dtype=self._prior_loc.dtype, device=self._prior_loc.device)
        for q in self.decoder_posterior().values():
            prior = Normal(torch.zeros_like(q.loc), torch.full_like(q.loc, prior_std), validate_args=False)
            total = total + kl_divergence(q, prior).sum()
        return total

    def draw_decoder_parameters(self, noise: DecoderParameters | None = None) -> DecoderParameters:
        """θ̃ = μ_θ + σ_θ ⊙ ζ, ζ ~ N(0, I): reparameterised (differentiable in μ_θ and σ_θ), by name.
        ``noise``: ζ by name, instead of fresh draws (tests, e.g. finite differences)."""
        posterior = self.decoder_posterior()
        if noise is None:
            return {name: q.rsample() for name, q in posterior.items()}
        return {name: q.loc + q.scale * noise[name] for name, q in posterior.items()}

    def mean_decoder_parameters(self) -> DecoderParameters:
        """θ = μ_θ, the posterior mean (the decoder's own parameters)."""
        return dict(self.decoder.named_parameters())

    @contextmanager
    def decoder_parameters(self, parameters: DecoderParameters):
        """Within the block every ``decode`` uses ``parameters`` (e.g. one draw θ̃ for a minibatch,
        or :meth:`mean_decoder_parameters`) instead of a fresh draw per call."""
        previous, self._fixed = self._fixed, parameters
        try:
            yield self
        finally:
            self._fixed = previous

    def decode(self, z: torch.Tensor) -> Distribution:
        """p_θ(x|z) for z (..., J), θ the fixed parameters (see :meth:`decoder_parameters`), else a
        fresh draw θ̃ ~ q(θ) for this call."""
        parameters = self._fixed if self._fixed is not None else self.draw_decoder_parameters()
        return functional_call(self.decoder, parameters, (z,))
