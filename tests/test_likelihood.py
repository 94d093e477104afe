"""Honest log-likelihood: importance sampling, the Appendix D HMC estimator and the IWAE bound,
checked against the exact log p(x) of factor analysis expressed as a VAE."""

import copy
import math

import pytest
import torch

from aevb import estimator_b
from aevb.evaluation.hmc import sample_hmc
from aevb.evaluation.hmc_estimator import hmc_log_likelihood
from aevb.evaluation.importance_sampling import estimate_log_likelihood
from aevb.models.factor_analysis import exact_log_likelihood, exact_posterior, marginal, random_factor_analysis_vae
from aevb.objectives.estimators import ESTIMATORS, estimator_a, iwae_bound


@pytest.fixture(scope="module")
def factor_analysis():
    torch.manual_seed(0)
    model = random_factor_analysis_vae(data_dim=5, latent_dim=2, seed=1, encoder_perturbation=0.1)
    x = marginal(model).sample((300,))
    return model, x, exact_log_likelihood(model, x)


def test_importance_sampling_converges_to_the_exact_log_likelihood(factor_analysis):
    model, x, exact = factor_analysis
    torch.manual_seed(1)
    errors = {}
    for k in (1, 10, 100, 5000):
        estimate = estimate_log_likelihood(model, x, num_samples=k)
        errors[k] = abs(estimate.mean - exact.mean().item())
        if k == 5000:
            # Within its own standard error of the truth, per datapoint and for the mean.
            assert errors[k] < 4 * estimate.stderr + 1e-3, (estimate.mean, exact.mean().item(), estimate.stderr)
            z = (estimate.per_datapoint - exact) / estimate.per_datapoint_stderr
            assert z.abs().max() < 6 and z.abs().mean() < 1.5
    assert errors[5000] < errors[100] < errors[10] < errors[1]


def test_importance_sampling_is_not_below_the_k1_bound_on_average(factor_analysis):
    model, x, _ = factor_analysis
    torch.manual_seed(2)
    with torch.no_grad():
        bound = estimator_b(model, x, 1000).mean().item()
    estimate = estimate_log_likelihood(model, x, num_samples=100)
    assert estimate.mean >= bound
    assert estimate.mean - bound > 10 * estimate.stderr  # strictly, by far more than the noise


def test_importance_sampling_streams_any_k_in_a_small_memory_budget(factor_analysis):
    model, x, _ = factor_analysis
    torch.manual_seed(3)
    small = estimate_log_likelihood(model, x[:7], num_samples=2000, max_rows=300)  # many passes
    torch.manual_seed(3)
    large = estimate_log_likelihood(model, x[:7], num_samples=2000, max_rows=10**6)  # one pass
    assert small.per_datapoint.shape == (7,)
    assert abs(small.mean - large.mean) < 4 * math.hypot(small.stderr, large.stderr) + 1e-6


def test_iwae_bound_increases_with_k_towards_the_exact_value(factor_analysis):
    model, x, exact = factor_analysis
    torch.manual_seed(4)
    means = []
    with torch.no_grad():
        for k in (1, 5, 50, 500):
            repeats = torch.stack([iwae_bound(model, x, k) for _ in range(20)])
            means.append(repeats.mean().item())
    assert means == sorted(means), means
    assert means[-1] < exact.mean().item() + 0.01
    assert exact.mean().item() - means[-1] < 0.1 * (exact.mean().item() - means[0])


def test_iwae_at_k1_is_estimator_a(factor_analysis):
    model, x, _ = factor_analysis
    torch.manual_seed(5)
    a = estimator_a(model, x, 1)
    torch.manual_seed(5)
    torch.testing.assert_close(iwae_bound(model, x, 1), a)
    assert ESTIMATORS["IWAE"] is iwae_bound


def test_hmc_samples_the_exact_posterior():
    torch.manual_seed(0)
    model = random_factor_analysis_vae(data_dim=4, latent_dim=2, seed=2)
    x = marginal(model).sample((1,)).repeat(2000, 1)  # 2000 chains on one datapoint
    posterior = exact_posterior(model, x[:1])
    posterior_mean, posterior_cov = posterior.mean[0], posterior.covariance_matrix[0]

    def log_joint(z):
        return model.prior().log_prob(z) + model.decode(z).log_prob(x)

    generator = torch.Generator().manual_seed(0)
    samples, _, acceptance = sample_hmc(
        log_joint, torch.zeros(2000, 2, dtype=torch.float64), 5, leapfrog_steps=4, burn_in=300, generator=generator
    )
    z = samples[-1]
    assert (acceptance.mean() - 0.9).abs() < 0.07
    torch.testing.assert_close(
        z.mean(0), posterior_mean, atol=5 * posterior_cov.diagonal().max().sqrt() / 2000**0.5, rtol=0
    )
    torch.testing.assert_close(torch.cov(z.T), posterior_cov, atol=0.1 * posterior_cov.abs().max(), rtol=0)


def test_appendix_d_estimator_lands_within_its_error_of_the_exact_value(factor_analysis):
    model, x, exact = factor_analysis
    # The paper's settings (L = 50, 4 leapfrog steps): close, with a small upward (Jensen) bias.
    estimate, acceptance = hmc_log_likelihood(model, x, generator=torch.Generator().manual_seed(6))
    assert 0.8 < acceptance <= 1.0
    assert abs(estimate.mean - exact.mean().item()) < 0.05
    assert (estimate.per_datapoint - exact).abs().median() < 0.1
    # More posterior samples: within its statistical error of the exact value.
    estimate, _ = hmc_log_likelihood(model, x[:100], num_samples=400, generator=torch.Generator().manual_seed(7))
    error = estimate.mean - exact[:100].mean().item()
    assert abs(error) < 4 * estimate.stderr + 0.003, (error, estimate.stderr)


def test_factor_analysis_closed_forms_agree_with_each_other():
    model = random_factor_analysis_vae(data_dim=4, latent_dim=2, seed=3)
    x = marginal(model).sample((5,))
    z = torch.randn(5, 2, dtype=torch.float64)
    # Bayes: log p(x) = log p(z) + log p(x|z) − log p(z|x) for any z.
    via_bayes = model.prior().log_prob(z) + model.decode(z).log_prob(x) - exact_posterior(model, x).log_prob(z)
    torch.testing.assert_close(via_bayes, exact_log_likelihood(model, x))


def test_defensive_prior_mixture_rescues_a_poor_encoder():
    torch.manual_seed(0)
    model = random_factor_analysis_vae(data_dim=5, latent_dim=2, seed=1, encoder_perturbation=0.3)
    x = marginal(model).sample((300,))
    exact = exact_log_likelihood(model, x)
    torch.manual_seed(1)
    plain = estimate_log_likelihood(model, x, num_samples=5000)
    torch.manual_seed(1)
    mixed = estimate_log_likelihood(model, x, num_samples=5000, prior_mixture=0.5)
    # The poor encoder misses posterior mass: plain IS is far low, beyond its own error bars ...
    assert exact.mean().item() - plain.mean > 10 * plain.stderr
    # ... the mixture with the prior finds it, and its error bars are honest.
    assert abs(mixed.mean - exact.mean().item()) < 4 * mixed.stderr
    assert ((mixed.per_datapoint - exact) / mixed.per_datapoint_stderr).abs().max() < 6
    with pytest.raises(Exception, match="prior mixture"):
        estimate_log_likelihood(model, x[:2], num_samples=10, prior_mixture=1.5)


def test_the_mixture_gives_the_encoder_no_density_off_its_support():
    """A prior draw below a Pareto posterior's scale has q(z|x) = 0, so its proposal density is
    α p(z) alone and log w = log p(x|z) − log α exactly (torch's unvalidated Pareto says otherwise)."""
    from aevb.evaluation.decoding import decoder_log_prob
    from aevb.models.vae import VAE, ModelConfig
    from aevb.objectives.estimators import log_importance_weights

    torch.manual_seed(0)
    model = VAE(ModelConfig(data_dim=6, latent_dim=2, hidden_units=5, posterior="pareto", prior="exponential"))
    x = torch.rand(4, 6)
    posterior = model.encode(x)
    torch.manual_seed(1)
    log_w = log_importance_weights(model, x, 400, posterior=posterior, prior_mixture=0.5)
    torch.manual_seed(1)
    z = posterior.sample((400,))
    from_prior = torch.rand(z.shape[:-1]) < 0.5
    z = torch.where(from_prior.unsqueeze(-1), model.prior().sample(z.shape[:-1]), z)
    outside = ~posterior.support.check(z)
    assert outside.sum() > 50
    torch.testing.assert_close(log_w[outside], (decoder_log_prob(model, z, x) - math.log(0.5))[outside])
    assert torch.isfinite(log_w).all()


def test_the_prior_alone_as_proposal_needs_no_encoder(factor_analysis):
    """α = 1 (a run that trained no encoder): the estimate is right whatever the encoder says."""
    model, x, exact = factor_analysis
    broken = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in broken.encoder.parameters():
            parameter.normal_(0, 5)
    torch.manual_seed(2)
    prior_only = estimate_log_likelihood(broken, x, num_samples=20_000, prior_mixture=1.0)
    assert abs(prior_only.mean - exact.mean().item()) < 4 * prior_only.stderr + 0.01


def test_importance_resampled_starts_are_close_to_posterior_draws(factor_analysis):
    """Prior draws resampled by p(x|z): their moments approach the exact posterior's."""
    from aevb.evaluation.hmc_estimator import importance_resampled

    model, x, _ = factor_analysis
    rows = x[:3].repeat_interleave(4000, dim=0)
    starts = importance_resampled(model, rows, 2000, torch.Generator().manual_seed(3)).view(3, 4000, -1)
    posterior = exact_posterior(model, x[:3])
    for row in range(3):
        mean, covariance = posterior.mean[row], posterior.covariance_matrix[row]
        drawn = starts[row]
        standard_error = (covariance.diagonal() / drawn.shape[0]).sqrt()
        assert ((drawn.mean(0) - mean).abs() < 5 * standard_error + 0.02).all(), (drawn.mean(0), mean)
        torch.testing.assert_close(torch.cov(drawn.T), covariance, rtol=0.15, atol=0.01)
    again = importance_resampled(model, rows[:50], 2000, torch.Generator().manual_seed(3))
    assert torch.equal(again, importance_resampled(model, rows[:50], 2000, torch.Generator().manual_seed(3)))


def test_appendix_d_estimator_on_a_bimodal_posterior_never_overshoots():
    """p(x|z) symmetric in z gives a posterior with two separated modes. Chains that stay in one
    mode make the App. D estimate low by up to log 2; chains of the two sets in different modes
    would make it absurdly high. Starting from the prior, it must stay in [exact − log 2, exact]."""
    from aevb import VAE, ModelConfig

    model = VAE(
        ModelConfig(data_dim=1, latent_dim=1, hidden_units=2, likelihood="gaussian", decoder_variance="per-dimension")
    ).double()
    with torch.no_grad():
        hidden = model.decoder.net.hidden[0]  # tanh(3z + 1), tanh(−3z + 1)
        hidden.weight.copy_(torch.tensor([[3.0], [-3.0]]))
        hidden.bias.fill_(1.0)
        model.decoder.net.heads.weight.fill_(1.0)  # mean = sum, symmetric in z
        model.decoder.net.heads.bias.zero_()
        model.decoder.log_var.fill_(math.log(0.01))
    x = torch.full((200, 1), 0.8, dtype=torch.float64)  # modes near z = ±0.45
    grid = torch.linspace(-8, 8, 400_001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        log_joint = model.prior().log_prob(grid) + model.decode(grid).log_prob(x[:1])
    exact = (torch.logsumexp(log_joint, 0) + math.log(16 / 400_000)).item()
    estimate, _ = hmc_log_likelihood(model, x, initial="prior", generator=torch.Generator().manual_seed(0))
    assert estimate.per_datapoint.max().item() < exact + 0.3
    assert estimate.per_datapoint.min().item() > exact - math.log(2) - 0.3


def test_chains_started_at_the_prior_start_at_draws_from_the_models_prior():
    """initial="prior" draws from p(z) itself: Laplace(0, 1) has variance 2, N(0, I) has 1."""
    from aevb.evaluation.hmc_estimator import _starting_points
    from aevb.models.vae import VAE, ModelConfig

    model = VAE(ModelConfig(data_dim=3, latent_dim=2, hidden_units=4, posterior="laplace", prior="laplace"))
    x = torch.rand(20_000, 3)
    starts = _starting_points(model, x, "prior", 2, torch.Generator().manual_seed(0))
    again = _starting_points(model, x, "prior", 2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(starts, again)
    # The variance of a variance estimate of a Laplace is (μ4 − σ⁴)/n = (24 − 4)/n.
    assert abs(starts.var().item() - 2.0) < 5 * math.sqrt(20 / starts.numel())
