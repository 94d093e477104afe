"""The paper's baselines (§5, App. E): wake-sleep and Monte Carlo EM, as Trainer algorithms.

Where possible the checks are exact, on factor analysis (a VAE whose posterior and log p(x) are
known in closed form): the sleep phase's fixed point is the exact posterior mean (and, being a
KL(p ‖ q) fit, the exact marginal variances); the MCEM chains sample the exact posterior; MCEM
learns a factor-analysis model to the data's log-likelihood under the true parameters.
"""

import copy
import math

import pytest
import torch

from aevb import VAE, AevbError, ModelConfig, TrainConfig, Trainer
from aevb.baselines import MonteCarloEM, WakeSleep
from aevb.data import load_dataset
from aevb.evaluation.hmc_estimator import hmc_log_likelihood
from aevb.models.factor_analysis import (
    _posterior_gain_and_covariance,
    exact_log_likelihood,
    exact_posterior,
    marginal,
    random_factor_analysis_vae,
)
from aevb.training import AEVB
from aevb.training.algorithms import ALGORITHMS, make_algorithm, trains_encoder


@pytest.fixture(scope="module")
def sample_data():
    return load_dataset("mnist-sample")


def factor_analysis_config(data_dim=5, latent_dim=2):
    return ModelConfig(
        data_dim=data_dim,
        latent_dim=latent_dim,
        hidden_layers=0,
        likelihood="gaussian",
        decoder_variance="per-dimension",
        log_variance_bound=None,
    )


def test_registry_builds_each_algorithm_from_the_config():
    config = TrainConfig(max_samples=10, num_samples=3, estimator="A")
    assert set(ALGORITHMS) == {"aevb", "wake-sleep", "wake-sleep-unclipped", "mcem", "full-vb"}
    aevb = make_algorithm("aevb", config)
    assert isinstance(aevb, AEVB) and aevb.num_samples == 3 and aevb.has_bound
    wake_sleep = make_algorithm("wake-sleep", config)
    assert isinstance(wake_sleep, WakeSleep) and wake_sleep.num_samples == 3 and wake_sleep.has_bound
    mcem = make_algorithm("mcem", config)
    assert isinstance(mcem, MonteCarloEM) and not mcem.has_bound
    assert [trains_encoder(name) for name in ("aevb", "wake-sleep", "mcem", "from-a-newer-aevb")] == [
        True,
        True,
        False,
        True,
    ]
    assert (mcem.leapfrog_steps, mcem.weight_updates, mcem.target_acceptance) == (10, 5, 0.9)  # App. E
    with pytest.raises(AevbError, match="estimator B"):  # full VB (App. F) has estimator B inside
        make_algorithm("full-vb", config)
    with pytest.raises(AevbError, match="unknown algorithm"):
        make_algorithm("gibbs", config)


# --------------------------------------------------------------------------------------------------
# Wake-sleep


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_wake_reaches_only_the_decoder_sleep_only_the_encoder_and_one_step_is_both(likelihood):
    torch.manual_seed(0)
    model = VAE(ModelConfig(data_dim=12, latent_dim=3, hidden_units=8, likelihood=likelihood, init_std=0.3))
    x = torch.rand(20, 12)
    algorithm = WakeSleep()
    dreams = []
    model.encoder.register_forward_hook(lambda module, inputs, output: dreams.append(inputs[0]))

    torch.manual_seed(1)
    wake, bound = algorithm.wake_loss(model, x)
    sleep = algorithm.sleep_loss(model, 20)
    assert bound.shape == (20,) and not bound.requires_grad
    wake_grads = torch.autograd.grad(wake, list(model.parameters()), allow_unused=True)
    sleep_grads = torch.autograd.grad(sleep, list(model.parameters()), allow_unused=True)
    names = [name for name, _ in model.named_parameters()]
    for name, wake_grad, sleep_grad in zip(names, wake_grads, sleep_grads):
        if name.startswith("decoder."):
            assert wake_grad is not None and wake_grad.abs().sum() > 0 and sleep_grad is None, name
        else:
            assert name.startswith("encoder.")
            assert sleep_grad is not None and sleep_grad.abs().sum() > 0 and wake_grad is None, name

    # The dream is a sample of p(x|z): binary for a Bernoulli decoder, continuous for a Gaussian one.
    dream = dreams[-1]
    assert dream.shape == (20, 12)
    is_binary = bool(((dream == 0) | (dream == 1)).all())
    assert is_binary == (likelihood == "bernoulli")

    # One step (one backward on the summed losses) moves each parameter by exactly its phase's gradient.
    stepped = copy.deepcopy(model)
    before = [p.detach().clone() for p in stepped.parameters()]
    torch.manual_seed(1)
    reported = algorithm.step(stepped, torch.optim.SGD(stepped.parameters(), lr=1.0), x, torch.arange(20))
    torch.testing.assert_close(reported, bound.sum())
    for start, after, wake_grad, sleep_grad in zip(before, stepped.parameters(), wake_grads, sleep_grads):
        gradient = wake_grad if wake_grad is not None else sleep_grad
        torch.testing.assert_close(start - after.detach(), gradient)


@pytest.mark.parametrize("sigmoid_mean", [True, False])
def test_dreams_of_a_sigmoid_mean_gaussian_decoder_stay_in_the_unit_interval(sigmoid_mean):
    """The authors' code clips a sigmoid-Gaussian decoder's dreams to [0, 1] (anglepy DLVM.gen_xz);
    an unbounded Gaussian decoder's dreams are not clipped."""
    torch.manual_seed(0)
    config = ModelConfig(data_dim=30, latent_dim=2, hidden_units=8, likelihood="gaussian", sigmoid_mean=sigmoid_mean)
    model, seen = VAE(config), []
    encode = model.encode
    model.encode = lambda x: seen.append(x) or encode(x)
    WakeSleep().sleep_loss(model, 500)
    torch.manual_seed(1)
    make_algorithm("wake-sleep-unclipped", TrainConfig(max_samples=10)).sleep_loss(model, 500)
    dreams, unclipped = seen
    inside = bool(((dreams >= 0) & (dreams <= 1)).all())
    assert inside == sigmoid_mean
    if sigmoid_mean:  # (σ = 1 at the start: many draws fall outside and are clipped to the ends)
        assert ((dreams == 0) | (dreams == 1)).float().mean() > 0.2
    # the ablation leaves them as drawn: a sizeable share outside [0, 1], none exactly at the ends
    outside = ((unclipped < 0) | (unclipped > 1)).float().mean()
    assert outside > 0.2 and not ((unclipped == 0) | (unclipped == 1)).any()


def test_sleep_phase_drives_the_encoder_to_the_exact_posterior():
    """With θ fixed the sleep phase minimises E_p(x) KL(p(z|x) ‖ q(z|x)); for factor analysis and a
    linear Gaussian encoder its minimum is q's mean = the exact posterior mean and q's variances =
    the exact posterior's marginal variances (moment matching, unlike the bound's KL(q ‖ p))."""
    torch.manual_seed(0)
    model = random_factor_analysis_vae(data_dim=5, latent_dim=2, seed=0, encoder_perturbation=0.0)
    _, covariance = _posterior_gain_and_covariance(model)
    with torch.no_grad():
        for parameter in model.encoder.parameters():
            parameter.normal_(0.0, 0.01)
    decoder_before = [p.detach().clone() for p in model.decoder.parameters()]
    x = marginal(model).sample((2000,))
    posterior_mean = exact_posterior(model, x).mean
    posterior_std = covariance.diagonal().sqrt()

    def mean_error():
        with torch.no_grad():
            return ((model.encode(x).mean - posterior_mean) / posterior_std).abs()

    assert mean_error().mean() > 1.0  # far off at the start
    algorithm, steps = WakeSleep(), 400
    optimizer = torch.optim.Adam(model.encoder.parameters(), lr=0.05)  # the decoder is frozen
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    for _ in range(steps):
        loss = algorithm.sleep_loss(model, 200)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    error = mean_error()
    assert error.mean() < 0.1 and error.max() < 0.4, (error.mean(), error.max())  # in posterior std units
    with torch.no_grad():
        variance_ratio = model.encode(x).variance / covariance.diagonal()
    # The log-variance head is linear in x too; its x-dependence (zero at the optimum) is noisier.
    assert (variance_ratio.mean(0) - 1).abs().max() < 0.05, variance_ratio.mean(0)
    assert (variance_ratio - 1).abs().median() < 0.05
    assert all(torch.equal(a, b) for a, b in zip(decoder_before, model.decoder.parameters()))


@pytest.fixture(scope="module")
def aevb_and_wake_sleep_runs(sample_data):
    """AEVB and wake-sleep with the same model, data, seed and budget, each choosing its Adagrad step
    size from the paper's candidates by the training bound (§5)."""
    runs = {}
    for name in ("aevb", "wake-sleep"):
        # (torch's Adagrad and σ = 0.1: at 600 steps the defaults' 100-step warm-up and small start would
        # leave both on the initial plateau, where neither is ahead; Figure 2 compares them at the defaults)
        config = TrainConfig(
            max_samples=60_000,
            selection_steps=100,
            first_eval=20_000,
            evals_per_decade=2,
            eval_subset=1000,
            seed=0,
            optimizer="adagrad",
        )
        model = VAE(ModelConfig(data_dim=784, latent_dim=10, hidden_units=64, init="normal", init_std=0.1))
        trainer = Trainer(
            model, sample_data.train, config, valid=sample_data.valid, algorithm=make_algorithm(name, config)
        )
        runs[name] = trainer.fit()
    return runs


def test_wake_sleep_improves_the_bound(aevb_and_wake_sleep_runs):
    result = aevb_and_wake_sleep_runs["wake-sleep"]
    chosen = next(t for t in result.step_size_trials if t.step_size == result.step_size)
    first, last = result.history[0], result.history[-1]
    assert last.samples == 60_000
    assert math.isfinite(last.train_bound) and math.isfinite(last.valid_bound)
    # From the end of the step-size trial (10⁴ samples) to 6·10⁴ samples: ≈ −211 → −192 nats.
    assert last.train_bound > chosen.mean_bound + 10
    assert last.valid_bound > first.valid_bound


def test_aevb_beats_wake_sleep_on_the_bound(aevb_and_wake_sleep_runs):
    """The paper's Fig. 2: AEVB converges faster (seed 0: −165 vs −192 nats on train, −170 vs −194 valid)."""
    aevb, wake_sleep = aevb_and_wake_sleep_runs["aevb"].history[-1], aevb_and_wake_sleep_runs["wake-sleep"].history[-1]
    assert aevb.train_bound > wake_sleep.train_bound + 10
    assert aevb.valid_bound > wake_sleep.valid_bound + 10


# --------------------------------------------------------------------------------------------------
# Monte Carlo EM


def test_mcem_chains_sample_the_exact_posterior_with_about_90_percent_acceptance():
    """E-step only (decoder frozen): after 25 visits per datapoint each persistent chain's state is a
    draw from its exact posterior N(m(x), Σ), so the standardised u = chol(Σ)⁻¹ (z − m(x)) over the
    datapoints is N(0, I); the adapted step sizes give the paper's 90% acceptance."""
    torch.manual_seed(0)
    model = random_factor_analysis_vae(data_dim=5, latent_dim=2, seed=1)
    size = 2000
    x = marginal(model).sample((size,))
    posterior = exact_posterior(model, x)
    cholesky = torch.linalg.cholesky(posterior.covariance_matrix[0])
    algorithm = MonteCarloEM(weight_updates=0)
    algorithm.setup(model, x)
    assert algorithm.z.shape == (size, 2) and algorithm.step_sizes.shape == (size,)

    z_before = algorithm.z.clone()
    rows = torch.arange(0, 100)
    result = algorithm.step(model, None, x[rows], rows)
    assert torch.isnan(result)
    assert torch.equal(algorithm.z[100:], z_before[100:])  # unvisited chains stay put
    assert (algorithm.z[:100] != z_before[:100]).any(-1).float().mean() > 0.5
    assert (algorithm.visits[:100] == 1).all() and (algorithm.visits[100:] == 0).all()

    for _ in range(25):
        order = torch.randperm(size)
        for start in range(0, size, 100):
            rows = order[start : start + 100]
            algorithm.step(model, None, x[rows], rows)
    u = torch.linalg.solve_triangular(cholesky, (algorithm.z - posterior.mean).T, upper=False).T
    assert u.mean(0).abs().max() < 0.1, u.mean(0)  # standard error 0.022
    assert (torch.cov(u.T) - torch.eye(2, dtype=u.dtype)).abs().max() < 0.15, torch.cov(u.T)  # s.e. ≈ 0.03
    assert abs(algorithm.acceptance.mean().item() - 0.9) < 0.03
    assert algorithm.step_sizes.std() > 0  # per datapoint


def test_mcem_learns_factor_analysis_to_the_true_models_likelihood():
    """Data from a known factor-analysis model; MCEM from a random (near-zero) FA decoder, through
    the Trainer, raises the exact log-likelihood of the data to that of the true parameters."""
    truth = random_factor_analysis_vae(data_dim=5, latent_dim=2, seed=3)
    torch.manual_seed(0)
    x = marginal(truth).sample((500,))
    model = VAE(factor_analysis_config()).double()
    algorithm = MonteCarloEM()
    config = TrainConfig(epochs=30, step_size=0.1, first_eval=500, evals_per_decade=4, seed=0)
    torch.manual_seed(config.seed)
    model.reset_parameters()  # what fit() starts from
    initial = exact_log_likelihood(model, x).mean().item()
    encoder_before = [p.detach().clone() for p in model.encoder.parameters()]
    result = Trainer(model, x, config, valid=x[:50], algorithm=algorithm).fit()
    final = exact_log_likelihood(model, x).mean().item()
    target = exact_log_likelihood(truth, x).mean().item()
    # Seed 0: −9.61 → −7.07 nats per datapoint, the true parameters' −7.07.
    assert final > initial + 2.0
    assert final > target - 0.1, (initial, final, target)
    # No bound for a model without a trained encoder: NaN, not a number from the untouched encoder.
    assert all(math.isnan(m.train_bound) and math.isnan(m.valid_bound) for m in result.history)
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, model.encoder.parameters()))
    assert algorithm.visits.sum().item() == 30 * 500
    with pytest.raises(AevbError, match="step size"):
        Trainer(model, x, TrainConfig(epochs=1), algorithm=MonteCarloEM())  # nothing to select one by


def test_mcem_on_mnist_sample_improves_the_appendix_d_likelihood(sample_data):
    train = sample_data.train[:500]
    model = VAE(ModelConfig(data_dim=784, latent_dim=3, hidden_units=16))  # Fig. 3: Nz = 3
    algorithm = MonteCarloEM()
    config = TrainConfig(max_samples=5000, step_size=0.1, first_eval=5000, seed=0)
    generator = torch.Generator().manual_seed(0)
    rows = torch.arange(50)
    torch.manual_seed(config.seed)
    model.reset_parameters()
    before, _ = algorithm_log_likelihood(algorithm, model, train, rows, generator)
    Trainer(model, train, config, algorithm=algorithm).fit()
    after, acceptance = algorithm_log_likelihood(algorithm, model, train, rows, generator)
    assert after.mean > before.mean + 200, (before.mean, after.mean)  # seed 0: −522 → −158 nats
    assert 0.8 < acceptance <= 1


def algorithm_log_likelihood(algorithm, model, train, rows, generator):
    indices = rows if algorithm.z is not None else None  # persistent chains once trained
    return algorithm.log_likelihood(model, train[rows], indices, num_samples=20, burn_in=50, generator=generator)


def test_appendix_d_estimator_can_start_anywhere():
    torch.manual_seed(0)
    model = random_factor_analysis_vae(data_dim=5, latent_dim=2, seed=1, encoder_perturbation=0.1)
    x = marginal(model).sample((100,))
    exact = exact_log_likelihood(model, x).mean().item()
    far = torch.full((100, 2), 3.0, dtype=torch.float64)
    for initial in ("zeros", "prior", "importance-resampled", far):
        estimate, acceptance = hmc_log_likelihood(model, x, initial=initial, generator=torch.Generator().manual_seed(1))
        assert abs(estimate.mean - exact) < 0.05, (initial, estimate.mean, exact)
        assert 0.8 < acceptance <= 1
    with pytest.raises(AevbError, match="shape"):
        hmc_log_likelihood(model, x, initial=far[:10])
    with pytest.raises(AevbError, match="initial"):
        hmc_log_likelihood(model, x, initial="posterior")


def test_an_algorithm_of_ones_own_needs_only_a_name_and_a_step():
    """The base class gives every other capability a default: a bound, no skipped steps, one
    process, no state of its own; an object that is no Algorithm is refused in one line."""
    from aevb import VAE, ModelConfig
    from aevb.errors import AevbError
    from aevb.training import Algorithm, TrainConfig, Trainer

    class PlainGradient(Algorithm):
        name = "plain-gradient"

        def step(self, model, optimizer, x, indices, shard=None):
            optimizer.zero_grad()
            bound = model.decode(model.encode(x).rsample()).log_prob(x).sum()  # a reconstruction term
            (-bound).backward()
            optimizer.step()
            return bound.detach()

    torch.manual_seed(0)
    data = torch.rand(60, 12)
    config = TrainConfig(batch_size=20, max_samples=400, step_size=0.01, first_eval=200, evals_per_decade=2)
    algorithm = PlainGradient()
    assert algorithm.has_bound and not algorithm.distributable and algorithm.state_dict() == {}
    assert not algorithm.steps_thread_count_invariant and algorithm.parameter_groups(None, 0.0) is None
    result = Trainer(
        VAE(ModelConfig(data_dim=12, latent_dim=2, hidden_units=8)), data, config, algorithm=algorithm
    ).fit()
    assert result.history[-1].samples == 400

    class NotOne:
        name = "not-one"

    with pytest.raises(AevbError, match="must be an aevb.training.Algorithm, got NotOne"):
        Trainer(VAE(ModelConfig(data_dim=12, latent_dim=2, hidden_units=8)), data, config, algorithm=NotOne())
