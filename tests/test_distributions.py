"""The distributions of §2.4 / §3 against their mathematics (App. B for the KL)."""

import math

import pytest
import torch
from torch.distributions import kl_divergence

from aevb.models.distributions import (
    bernoulli_from_logits,
    diagonal_gaussian,
    gaussian_kl_to_standard_normal,
    standard_normal_prior,
)


def random_gaussian(batch=5, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    log_var = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    return mean, log_var


def test_registry_kl_equals_appendix_b_formula():
    mean, log_var = random_gaussian()
    q = diagonal_gaussian(mean, log_var)
    p = standard_normal_prior(4, dtype=torch.float64)
    registry = kl_divergence(q, p)
    assert registry.shape == (5,)
    torch.testing.assert_close(registry, gaussian_kl_to_standard_normal(mean, log_var), rtol=1e-12, atol=1e-12)
    # The formula itself, written out once more for one coordinate set.
    by_hand = -0.5 * (1 + log_var - mean**2 - log_var.exp()).sum(-1)
    torch.testing.assert_close(registry, by_hand)


def test_closed_form_kl_matches_monte_carlo():
    torch.manual_seed(1)
    mean, log_var = random_gaussian(batch=3, dim=3, seed=2)
    q = diagonal_gaussian(mean, log_var)
    p = standard_normal_prior(3, dtype=torch.float64)
    z = q.sample((400_000,))
    log_ratio = q.log_prob(z) - p.log_prob(z)  # (S, 3)
    estimate = log_ratio.mean(0)
    stderr = log_ratio.std(0) / math.sqrt(z.shape[0])
    exact = kl_divergence(q, p)
    assert torch.all((estimate - exact).abs() < 5 * stderr), (estimate, exact, stderr)


def test_kl_is_zero_only_at_the_prior():
    zero = torch.zeros(2, 3)
    assert torch.allclose(kl_divergence(diagonal_gaussian(zero, zero), standard_normal_prior(3)), torch.zeros(2))
    assert torch.all(kl_divergence(diagonal_gaussian(zero + 0.1, zero), standard_normal_prior(3)) > 0)


def test_rsample_is_location_scale_reparameterisation():
    mean, log_var = random_gaussian(batch=2, dim=3)
    q = diagonal_gaussian(mean, log_var)
    torch.manual_seed(7)
    z = q.rsample((4,))
    torch.manual_seed(7)
    epsilon = torch.randn(4, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(z, mean + torch.exp(0.5 * log_var) * epsilon)


def test_gaussian_log_prob_matches_formula():
    mean, log_var = random_gaussian(batch=2, dim=3)
    x = torch.randn(2, 3, dtype=torch.float64)
    by_hand = (-0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 / log_var.exp())).sum(-1)
    torch.testing.assert_close(diagonal_gaussian(mean, log_var).log_prob(x), by_hand)


def test_bernoulli_from_logits_is_the_cross_entropy_of_appendix_c():
    logits = torch.tensor([[-2.0, 0.0, 3.0]], dtype=torch.float64)
    x = torch.tensor([[0.0, 1.0, 0.25]], dtype=torch.float64)  # a grey level is allowed
    y = torch.sigmoid(logits)
    by_hand = (x * y.log() + (1 - x) * (1 - y).log()).sum(-1)
    torch.testing.assert_close(bernoulli_from_logits(logits).log_prob(x), by_hand)


@pytest.mark.parametrize("logit", [80.0, -80.0, 1e4, -1e4])
def test_bernoulli_log_prob_is_stable_for_saturated_logits(logit):
    logits = torch.full((1, 2), logit)
    x = torch.tensor([[0.0, 1.0]])
    value = bernoulli_from_logits(logits).log_prob(x)
    assert torch.isfinite(value).all()
    # One of the two pixels is certain and costs ~0 nats, the other costs |logit| nats.
    assert value.item() == pytest.approx(-abs(logit), rel=1e-5)
