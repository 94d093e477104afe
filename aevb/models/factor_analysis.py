"""Factor analysis as a VAE: the linear-Gaussian latent model whose log p(x) is known exactly.

x = W z + b + ε, z ~ N(0, I), ε ~ N(0, diag ψ). As an aevb model it is a Gaussian decoder with no
hidden layer, a per-dimension variance and no bound on it (``ModelConfig(hidden_layers=0,
likelihood="gaussian", decoder_variance="per-dimension", log_variance_bound=None)``). Then

    log p(x) = log N(x; b, W Wᵀ + diag ψ),
    p(z|x)   = N(Σ Wᵀ ψ⁻¹ (x − b), Σ),  Σ = (I + Wᵀ ψ⁻¹ W)⁻¹,

which makes it the yardstick for every estimator of log p(x) (importance sampling, the HMC
estimator of Appendix D, the IWAE bound).
"""

from __future__ import annotations

import torch
from torch.distributions import MultivariateNormal

from ..errors import AevbError
from .vae import VAE, ModelConfig


def _parameters(model: VAE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    config = model.config
    if not (
        config.hidden_layers == 0
        and config.likelihood == "gaussian"
        and config.decoder_variance == "per-dimension"
        and not config.sigmoid_mean
        and config.log_variance_bound is None
    ):
        raise AevbError(
            "not a factor-analysis model: needs hidden_layers=0, a Gaussian decoder with "
            "per-dimension variance, no sigmoid mean and no log-variance bound"
        )
    heads = model.decoder.net.heads
    return heads.weight.detach(), heads.bias.detach(), model.decoder.log_var.detach()


def marginal(model: VAE) -> MultivariateNormal:
    """p(x) = N(b, W Wᵀ + diag ψ), event shape (D,)."""
    loading, mean, log_noise = _parameters(model)
    return MultivariateNormal(mean, loading @ loading.T + torch.diag(log_noise.exp()))


def exact_log_likelihood(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """log p(x) in closed form, (N,) for x of shape (N, D), nats."""
    return marginal(model).log_prob(x)


def _posterior_gain_and_covariance(model: VAE) -> tuple[torch.Tensor, torch.Tensor]:
    """G = Σ Wᵀ ψ⁻¹ (J, D), so that E[z|x] = G (x − b), and Σ = (I + Wᵀ ψ⁻¹ W)⁻¹ (J, J)."""
    loading, _, log_noise = _parameters(model)
    precision_loading = loading * torch.exp(-log_noise)[:, None]  # ψ⁻¹ W
    identity = torch.eye(loading.shape[1], dtype=loading.dtype, device=loading.device)
    covariance = torch.linalg.inv(identity + loading.T @ precision_loading)
    return covariance @ precision_loading.T, covariance


def exact_posterior(model: VAE, x: torch.Tensor) -> MultivariateNormal:
    """p(z|x) in closed form: batch shape (N,), event shape (J,)."""
    gain, covariance = _posterior_gain_and_covariance(model)
    return MultivariateNormal((x - _parameters(model)[1]) @ gain.T, covariance)


def factor_analysis_vae(
    loading: torch.Tensor,
    mean: torch.Tensor,
    log_noise_variance: torch.Tensor,
    encoder_perturbation: float = 0.0,
    generator: torch.Generator | None = None,
) -> VAE:
    """A VAE that is factor analysis with the given W (D, J), b (D,) and log ψ (D,).

    Its (linear, diagonal-Gaussian) encoder is set to the best it can be: the exact posterior mean
    and the diagonal of the exact posterior covariance. ``encoder_perturbation`` adds N(0, s²)
    noise to the encoder's mean weights, making q a poorer proposal, as a trained encoder is.
    """
    data_dim, latent_dim = loading.shape
    model = VAE(
        ModelConfig(
            data_dim=data_dim,
            latent_dim=latent_dim,
            hidden_layers=0,
            likelihood="gaussian",
            decoder_variance="per-dimension",
            log_variance_bound=None,
        )
    ).to(loading.dtype)
    with torch.no_grad():
        model.decoder.net.heads.weight.copy_(loading)
        model.decoder.net.heads.bias.copy_(mean)
        model.decoder.log_var.copy_(log_noise_variance)
        gain, covariance = _posterior_gain_and_covariance(model)
        heads = model.encoder.net.heads  # rows: μ, then log σ²
        heads.weight.zero_()
        heads.weight[:latent_dim] = gain + encoder_perturbation * torch.randn(
            gain.shape, generator=generator, dtype=gain.dtype
        )
        heads.bias[:latent_dim] = -gain @ mean
        heads.bias[latent_dim:] = torch.log(covariance.diagonal())
    return model


def random_factor_analysis_vae(
    data_dim: int = 5, latent_dim: int = 2, seed: int = 0, encoder_perturbation: float = 0.1
) -> VAE:
    """A factor-analysis VAE with random W ~ N(0, 1), b ~ N(0, 0.25), ψ ~ U(0.2, 0.7) (float64)."""
    generator = torch.Generator().manual_seed(seed)
    loading = torch.randn(data_dim, latent_dim, generator=generator, dtype=torch.float64)
    mean = 0.5 * torch.randn(data_dim, generator=generator, dtype=torch.float64)
    log_noise = torch.log(0.2 + 0.5 * torch.rand(data_dim, generator=generator, dtype=torch.float64))
    return factor_analysis_vae(loading, mean, log_noise, encoder_perturbation, generator)
