"""The reparameterised gradient (§2.4): exact for fixed ε, unbiased over ε."""

import torch
from helpers import LinearGaussianModel

from aevb import VAE, ModelConfig, estimator_b


def _bound_with_fixed_noise(model, x, seed):
    torch.manual_seed(seed)
    return estimator_b(model, x, 2).sum()


def test_reparameterised_gradient_matches_finite_differences():
    torch.manual_seed(0)
    model = VAE(ModelConfig(data_dim=5, latent_dim=2, hidden_units=4, init_std=0.5)).double()
    x = torch.rand(3, 5, dtype=torch.float64)
    model.zero_grad()
    _bound_with_fixed_noise(model, x, seed=11).backward()
    step = 1e-6
    for name, parameter in model.named_parameters():
        analytic = parameter.grad.reshape(-1)
        flat = parameter.data.reshape(-1)
        for index in range(0, flat.numel(), max(1, flat.numel() // 6)):
            original = flat[index].item()
            with torch.no_grad():
                flat[index] = original + step
                upper = _bound_with_fixed_noise(model, x, seed=11).item()
                flat[index] = original - step
                lower = _bound_with_fixed_noise(model, x, seed=11).item()
                flat[index] = original
            numeric = (upper - lower) / (2 * step)
            assert abs(numeric - analytic[index].item()) < 1e-5 * (1 + abs(numeric)), (name, index)


def test_reparameterised_gradient_is_unbiased_for_the_exact_bound_gradient():
    model = LinearGaussianModel(data_dim=3, latent_dim=2, seed=3)
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    parameters = list(model.parameters())
    exact = torch.autograd.grad(model.exact_bound(x).sum(), parameters)
    torch.manual_seed(0)
    draws = 4000
    samples = [torch.autograd.grad(estimator_b(model, x, 1).sum(), parameters) for _ in range(draws)]
    for index, exact_gradient in enumerate(exact):
        stacked = torch.stack([s[index] for s in samples])
        stderr = stacked.std(0) / draws**0.5
        assert torch.all((stacked.mean(0) - exact_gradient).abs() < 5 * stderr + 1e-10), index
