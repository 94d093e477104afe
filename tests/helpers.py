"""Small exact models shared by the tests."""

from __future__ import annotations

import math

import torch
from torch import nn

from aevb.models.distributions import diagonal_gaussian, standard_normal_prior


class LinearGaussianModel(nn.Module):
    """x = W z + b + noise, noise ~ N(0, diag s²), z ~ N(0, I); encoder q(z|x) = N(Ax + c, diag e^v).

    Everything is linear-Gaussian, so the bound and log p(x) have closed forms.
    """

    def __init__(self, data_dim: int = 3, latent_dim: int = 2, seed: int = 0, dtype=torch.float64):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(data_dim, latent_dim, generator=g, dtype=dtype))
        self.b = nn.Parameter(0.5 * torch.randn(data_dim, generator=g, dtype=dtype))
        self.log_noise_var = nn.Parameter(torch.log(0.3 + torch.rand(data_dim, generator=g, dtype=dtype)))
        self.A = nn.Parameter(0.3 * torch.randn(latent_dim, data_dim, generator=g, dtype=dtype))
        self.c = nn.Parameter(0.1 * torch.randn(latent_dim, generator=g, dtype=dtype))
        self.log_var = nn.Parameter(-1.0 + 0.2 * torch.randn(latent_dim, generator=g, dtype=dtype))
        self.latent_dim = latent_dim

    def encode(self, x):
        mean = x @ self.A.T + self.c
        return diagonal_gaussian(mean, self.log_var.expand_as(mean))

    def decode(self, z):
        mean = z @ self.W.T + self.b
        return diagonal_gaussian(mean, self.log_noise_var.expand_as(mean))

    def prior(self):
        return standard_normal_prior(self.latent_dim, dtype=self.W.dtype)

    def exact_bound(self, x: torch.Tensor) -> torch.Tensor:
        """𝓛(x) in closed form, (M,): E_q log N(x; Wz+b, S) − KL(q ‖ p)."""
        q = self.encode(x)
        mu, var = q.base_dist.loc, q.base_dist.scale.square()
        noise_var = self.log_noise_var.exp()
        residual = x - (mu @ self.W.T + self.b)
        expected_log_lik = (-0.5 * (math.log(2 * math.pi) + self.log_noise_var + residual.square() / noise_var)).sum(-1)
        expected_log_lik = expected_log_lik - 0.5 * ((self.W.square() @ var.T).T / noise_var).sum(-1)
        kl = 0.5 * (var + mu.square() - 1 - var.log()).sum(-1)
        return expected_log_lik - kl

    def exact_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = log N(x; b, W Wᵀ + S), (M,)."""
        covariance = self.W @ self.W.T + torch.diag(self.log_noise_var.exp())
        return torch.distributions.MultivariateNormal(self.b, covariance).log_prob(x)
