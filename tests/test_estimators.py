"""SGVB estimators A and B (§2.3) against the exact bound of a linear-Gaussian model."""

import math

import pytest
import torch
from helpers import LinearGaussianModel
from torch.distributions import Independent, StudentT

from aevb import ESTIMATORS, estimator_a, estimator_b, minibatch_bound


def independent_draws(estimator, model, x, count, num_samples=1):
    """``count`` independent estimates per datapoint, (count, M), in one batched call."""
    with torch.no_grad():
        return estimator(model, x.repeat(count, 1), num_samples).view(count, x.shape[0])


@pytest.fixture
def model_and_data():
    model = LinearGaussianModel(data_dim=3, latent_dim=2, seed=0)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return model, x


@pytest.mark.parametrize("name", ["A", "B"])
def test_estimator_is_unbiased_for_the_exact_bound(model_and_data, name):
    model, x = model_and_data
    torch.manual_seed(0)
    draws = independent_draws(ESTIMATORS[name], model, x, 100_000)
    with torch.no_grad():
        exact = model.exact_bound(x)
    stderr = draws.std(0) / math.sqrt(draws.shape[0])
    assert torch.all((draws.mean(0) - exact).abs() < 5 * stderr + 1e-9), (draws.mean(0), exact)


def test_estimators_a_and_b_have_the_same_expectation(model_and_data):
    model, x = model_and_data
    torch.manual_seed(3)
    a = independent_draws(estimator_a, model, x, 100_000)
    b = independent_draws(estimator_b, model, x, 100_000)
    difference = a.mean(0) - b.mean(0)
    stderr = torch.sqrt(a.var(0) / a.shape[0] + b.var(0) / b.shape[0])
    assert torch.all(difference.abs() < 5 * stderr)


def test_more_samples_per_datapoint_reduce_the_variance(model_and_data):
    model, x = model_and_data
    torch.manual_seed(4)
    one = independent_draws(estimator_b, model, x, 20_000)
    ten = independent_draws(estimator_b, model, x, 20_000, num_samples=10)
    ratio = one.var(0) / ten.var(0)
    assert torch.all((ratio > 8.5) & (ratio < 11.5)), ratio  # variance falls as 1/L


def test_minibatch_estimator_scales_by_n_over_m():
    per_datapoint = torch.tensor([-1.0, -2.0, -3.0, -6.0])
    assert minibatch_bound(per_datapoint, dataset_size=100).item() == pytest.approx(100 / 4 * -12.0)


def test_estimator_output_shapes(model_and_data):
    model, x = model_and_data
    for estimator in ESTIMATORS.values():
        assert estimator(model, x, 5).shape == (4,)


class StudentEncoderModel(LinearGaussianModel):
    """The same linear-Gaussian decoder with a factorised Student-t q(z|x): torch has no closed-form
    KL to N(0, I); aevb.models.families registers the exact one (ν > 2)."""

    def encode(self, x):
        mean = x @ self.A.T + self.c
        return Independent(StudentT(5.0, mean, torch.exp(0.5 * self.log_var).expand_as(mean)), 1)


def test_estimator_a_works_for_any_reparameterisable_posterior():
    model = StudentEncoderModel(seed=5)
    x = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    torch.manual_seed(0)
    bound = estimator_a(model, x, 50_000)
    # Reference: E_q[log p(x|z) + log p(z) − log q(z|x)] by plain Monte Carlo with .sample().
    with torch.no_grad():
        q = model.encode(x)
        z = q.sample((200_000,))
        terms = model.decode(z).log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)
    stderr = terms.std(0) / math.sqrt(terms.shape[0]) + terms.std(0) / math.sqrt(50_000)
    assert torch.all((bound.detach() - terms.mean(0)).abs() < 5 * stderr)
    bound.sum().backward()  # pathwise gradients reach the encoder
    assert model.A.grad is not None and torch.isfinite(model.A.grad).all()
    import aevb.models.families  # noqa: F401  (registers KL(Student-t ‖ Normal))

    torch.manual_seed(1)
    bound_b = estimator_b(model, x, 50_000)  # the same bound, with the KL in closed form
    assert torch.all((bound_b.detach() - terms.mean(0)).abs() < 5 * stderr)
