"""Full variational Bayes over the decoder's parameters (App. F): the closed-form KL, the SGVB
estimator of the full bound (unbiased, its σ_θ → 0 limit, its gradient), the predictive
log-likelihood against factor analysis' exact marginal, exact resume, and the command line."""

from __future__ import annotations

import copy
import json
import math
import random

import numpy as np
import pytest
import torch
from test_cli import call
from torch.distributions import MultivariateNormal, Normal

from aevb import VAE, ModelConfig
from aevb.engines.fused import unsupported_reason
from aevb.evaluation.full_vb import predictive_log_likelihood
from aevb.models.build import build_model
from aevb.models.factor_analysis import exact_log_likelihood, random_factor_analysis_vae
from aevb.models.full_vb import FullVBVAE
from aevb.objectives.estimators import estimator_b
from aevb.objectives.full_vb import full_bound_estimate
from aevb.training import TrainConfig, Trainer
from aevb.training.full_vb import FullVariationalBayes

LOG_2PI = math.log(2 * math.pi)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0, hidden_layers: int = 1, log_scale_range=(-2.0, -0.5), **options) -> FullVBVAE:
    """A float64 FullVBVAE with random means and random log σ_θ in ``log_scale_range``."""
    config = dict(data_dim=4, latent_dim=2, hidden_units=3, hidden_layers=hidden_layers, decoder_posterior="gaussian")
    model = FullVBVAE(ModelConfig(**(config | options))).double()
    generator = torch.Generator().manual_seed(seed)
    low, high = log_scale_range
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
        for log_scale in model.decoder_log_scale.values():
            log_scale.copy_(low + (high - low) * torch.rand(log_scale.shape, generator=generator, dtype=torch.float64))
    return model


def factor_analysis_model(seed: int = 0, log_scale: float = -1.5) -> FullVBVAE:
    """Factor analysis (no hidden layer, Gaussian decoder, per-dimension variance) under q(θ), its
    μ_θ a random factor-analysis model, its encoder near that model's exact posterior."""
    point = random_factor_analysis_vae(data_dim=4, latent_dim=2, seed=seed)
    model = FullVBVAE(dataclass_replace(point.config, decoder_posterior="gaussian")).double()
    model.load_state_dict(point.state_dict(), strict=False)
    with torch.no_grad():
        for value in model.decoder_log_scale.values():
            value.fill_(log_scale)
    return model


def test_the_kl_to_the_parameter_prior_matches_monte_carlo():
    model = tiny_model()
    precision = 2.5
    kl = model.decoder_parameter_kl(precision).item()
    torch.manual_seed(0)
    draws = 20_000
    prior_std = precision**-0.5
    values = torch.zeros(draws, dtype=torch.float64)
    with torch.no_grad():
        for name, q in model.decoder_posterior().items():
            theta = q.sample((draws,))  # (draws, *shape)
            prior = Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(prior_std, dtype=torch.float64))
            values += (q.log_prob(theta) - prior.log_prob(theta)).flatten(1).sum(1)
    assert abs(values.mean().item() - kl) < 4 * values.std().item() / math.sqrt(draws)
    assert kl > 0


def exact_factor_analysis_full_bound(model: FullVBVAE, x: torch.Tensor, precision: float) -> float:
    """𝓛(φ; X)/N in closed form for factor analysis under q(θ): E over θ and z of log p(x|z), by
    moments of independent Gaussians, minus both KL terms."""
    with torch.no_grad():
        q = model.decoder_posterior()
        weight, bias, log_var = q["net.heads.weight"], q["net.heads.bias"], q["log_var"]
        encoder = model.encode(x).base_dist
        mu, var = encoder.loc, encoder.scale.square()  # (N, J)
        m_w, s2_w = weight.loc, weight.scale.square()  # (D, J)
        mean = mu @ m_w.T + bias.loc  # (N, D)
        # Var(wᵀz + b) for independent coordinates: Σ_j [(m² + s²)(μ² + σ²) − m²μ²] + s_b².
        variance = (mu.square() + var) @ (m_w.square() + s2_w).T - mu.square() @ m_w.square().T + bias.scale.square()
        inverse_noise = torch.exp(-log_var.loc + 0.5 * log_var.scale.square())  # E[e^{−v}]
        expected_log_lik = -0.5 * (LOG_2PI + log_var.loc + inverse_noise * ((x - mean).square() + variance)).sum(-1)
        kl_z = 0.5 * (var + mu.square() - 1 - var.log()).sum(-1)
        return (expected_log_lik - kl_z).mean().item() - model.decoder_parameter_kl(precision).item() / x.shape[0]


def test_the_full_bound_estimator_is_unbiased_on_random_minibatches():
    model = factor_analysis_model(log_scale=-1.0)
    data = torch.randn(12, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    precision = 1.5
    exact = exact_factor_analysis_full_bound(model, data, precision)
    torch.manual_seed(1)
    estimates = []
    with torch.no_grad():
        for _ in range(4000):
            minibatch = data[torch.randperm(12)[:4]]
            estimates.append(full_bound_estimate(model, minibatch, 12, precision).per_datapoint.item())
    estimates = torch.tensor(estimates, dtype=torch.float64)
    stderr = estimates.std().item() / math.sqrt(len(estimates))
    assert abs(estimates.mean().item() - exact) < 4 * stderr, (estimates.mean().item(), exact, stderr)
    # and the total is (N/M) Σ over the minibatch − KL, N times the per-datapoint form
    estimate = full_bound_estimate(model, data[:4], 12, precision)
    assert torch.allclose(estimate.total, 3 * estimate.datapoint_bounds.sum() - model.decoder_parameter_kl(precision))


def _map_twin(model: FullVBVAE) -> VAE:
    """The MAP model with θ = μ_θ and the same encoder."""
    twin = VAE(dataclass_replace(model.config, decoder_posterior="point")).double()
    twin.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("decoder_log_scale.")})
    return twin


def dataclass_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def test_with_no_parameter_noise_the_full_bound_is_the_map_bound_plus_log_prior_and_entropy():
    """KL(q ‖ p) = −H[q] − log p(μ) + (λ/2) Σ σ², so with θ̃ = μ (ζ = 0) the estimate is exactly
    the MAP objective per datapoint plus (H[q] − λΣσ²/2)/N; as σ_θ → 0 with any ζ it tends to
    MAP bound + (log p(μ) + H[q])/N: nothing but the entropy term separates the two."""
    precision, size = 2.0, 50
    x = torch.rand(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = torch.randn(1, 6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for log_scale, zero_noise in ((-1.0, True), (math.log(1e-9), False)):
        model = tiny_model(log_scale_range=(log_scale, log_scale))
        twin = _map_twin(model)
        posterior = model.decoder_posterior()
        zeta = {
            name: (torch.zeros_like(q.loc) if zero_noise else torch.randn_like(q.loc)) for name, q in posterior.items()
        }
        with torch.no_grad():
            full = full_bound_estimate(
                model, x, size, precision, noise=noise, parameter_noise=zeta
            ).per_datapoint.item()
            map_bound = estimator_b(twin, x, 1, noise=noise).mean().item()
            prior = Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(precision**-0.5, dtype=torch.float64))
            log_prior = sum(prior.log_prob(q.loc).sum() for q in posterior.values()).item()
            entropy = sum(q.entropy().sum() for q in posterior.values()).item()
            variance = sum(q.scale.square().sum() for q in posterior.values()).item()
        expected = map_bound + (log_prior + entropy - 0.5 * precision * variance) / size
        tolerance = 1e-10 if zero_noise else 1e-6
        assert abs(full - expected) < tolerance * max(1.0, abs(expected)), (log_scale, full, expected)


def test_the_gradient_in_mu_and_sigma_matches_finite_differences():
    model = tiny_model(seed=2)
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = torch.randn(2, 5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    generator = torch.Generator().manual_seed(2)
    zeta = {
        name: torch.randn(p.shape, generator=generator, dtype=torch.float64)
        for name, p in model.decoder.named_parameters()
    }

    def objective() -> torch.Tensor:
        return full_bound_estimate(model, x, 40, 1.0, num_samples=2, noise=noise, parameter_noise=zeta).per_datapoint

    objective().backward()
    checked = 0
    for parameter in [*model.decoder.parameters(), *model.decoder_log_scale.values()]:
        flat, grad = parameter.data.view(-1), parameter.grad.view(-1)
        for index in range(0, flat.numel(), max(1, flat.numel() // 3)):
            original = flat[index].item()
            with torch.no_grad():
                flat[index] = original + 1e-6
                up = objective().item()
                flat[index] = original - 1e-6
                down = objective().item()
                flat[index] = original
            numeric = (up - down) / 2e-6
            assert abs(numeric - grad[index].item()) < 1e-6 * max(1.0, abs(numeric)), (index, numeric, grad[index])
            checked += 1
    assert checked >= 12


def test_the_predictive_log_likelihood_matches_the_exact_factor_analysis_marginal_under_q():
    """log E_q(θ)[p_θ(x)] two ways: parameter draws × importance-sampled z (the estimator) against
    many more parameter draws × the exact marginal N(x; b, W Wᵀ + diag e^v) of factor analysis."""
    model = factor_analysis_model(seed=1, log_scale=-1.5)
    x = (
        torch.randn(4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        + model.decoder.net.heads.bias.detach()
    )
    torch.manual_seed(0)
    draws = 40_000
    with torch.no_grad():
        q = model.decoder_posterior()
        weight = q["net.heads.weight"].sample((draws,))
        bias = q["net.heads.bias"].sample((draws,))
        noise_var = q["log_var"].sample((draws,)).exp()
        covariance = weight @ weight.transpose(1, 2) + torch.diag_embed(noise_var)
        log_p = MultivariateNormal(bias[:, None], covariance[:, None]).log_prob(x)  # (draws, N)
    reference = torch.logsumexp(log_p, 0) - math.log(draws)
    relative = torch.exp(log_p - reference).std(0) / math.sqrt(draws)  # delta-method error
    estimate = predictive_log_likelihood(model, x, num_samples=100, parameter_draws=1500)
    assert estimate.num_samples == 150_000
    error = torch.sqrt(estimate.per_datapoint_stderr.square() + relative.square())
    assert torch.all((estimate.per_datapoint - reference).abs() < 4 * error + 0.005), (
        estimate.per_datapoint,
        reference,
        error,
    )
    # the predictive likelihood is not the likelihood at the mean parameters
    assert ((exact_log_likelihood(_map_twin(model), x) - reference).abs() > 5 * error).any()


def _train(data, config, **fit_options):
    model = build_model(
        ModelConfig(data_dim=data.shape[1], latent_dim=3, hidden_units=16, decoder_posterior="gaussian")
    )
    trainer = Trainer(model, data, config, algorithm=FullVariationalBayes(config.prior_precision, config.num_samples))
    return model, trainer, trainer.fit(**fit_options)


def test_full_vb_training_starts_like_map_has_no_weight_decay_on_q_theta_and_resumes_exactly():
    torch.manual_seed(0)
    data = torch.rand(230, 12)
    config = TrainConfig(batch_size=20, max_samples=2100, selection_steps=8, first_eval=400, evals_per_decade=4, seed=4)
    reference, trainer, expected = _train(data, config)
    groups = trainer._optimizer(0.1).param_groups
    encoder = {id(p) for p in reference.encoder.parameters()}
    assert [group["weight_decay"] for group in groups] == [1.0 / 230, 0.0]
    assert {id(p) for p in groups[0]["params"]} == encoder
    assert len(groups[1]["params"]) == 2 * len(list(reference.decoder.parameters()))
    # σ_θ moved away from its initial value, towards the prior (the KL term)
    assert all((s.exp() > 0.01).all() for s in reference.decoder_log_scale.values())

    # the means start where the MAP model with the same seed starts
    torch.manual_seed(7)
    full = build_model(ModelConfig(data_dim=12, latent_dim=3, hidden_units=16, decoder_posterior="gaussian"))
    full.reset_parameters()
    torch.manual_seed(7)
    plain = VAE(ModelConfig(data_dim=12, latent_dim=3, hidden_units=16))
    plain.reset_parameters()
    for name, value in plain.state_dict().items():
        assert torch.equal(full.state_dict()[name], value)

    checkpoints = []
    _train(data, config, checkpoint_every=7, on_checkpoint=lambda state: checkpoints.append(copy.deepcopy(state)))
    for state in random.Random(1).sample(checkpoints, 3) + [checkpoints[0]]:
        model, _, result = _train(data, config, resume=state)
        for name, value in reference.state_dict().items():
            assert torch.equal(model.state_dict()[name], value), (state.samples, name)
        assert [m.minibatch_bound for m in result.history] == [m.minibatch_bound for m in expected.history]


def test_the_fused_engine_reports_full_vb():
    model = build_model(ModelConfig(data_dim=5, latent_dim=2, hidden_units=4, decoder_posterior="gaussian"))
    assert "full variational Bayes" in unsupported_reason(model, "B")
    with pytest.raises(Exception, match="full variational Bayes"):
        FullVariationalBayes(engine="fused").setup(model, torch.rand(10, 5))
    with pytest.raises(Exception, match="prior_precision"):
        FullVariationalBayes(prior_precision=0.0)


def test_the_command_line_trains_evaluates_and_samples_a_full_vb_run(tmp_path, capsys):
    run = tmp_path / "run"
    options = [
        "--hidden-units",
        "16",
        "--latent-dim",
        "3",
        "--max-samples",
        "3000",
        "--selection-steps",
        "5",
        "--eval-subset",
        "300",
        "--no-progress",
        "--threads",
        "1",
    ]
    assert call(["train", "--algorithm", "full-vb", "--engine", "fused", *options, "--out", tmp_path / "f"]) == 2
    assert "full variational Bayes" in capsys.readouterr().err
    assert call(["train", "--posterior-init-std", "0.01", *options, "--out", tmp_path / "g"]) == 2
    assert call(["train", "--algorithm", "full-vb", "--posterior-init-std", "0.002", *options, "--out", run]) == 0
    capsys.readouterr()
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "model.json").read_text())["model"]
    assert config["decoder_posterior"] == "gaussian" and config["decoder_posterior_init_std"] == 0.002
    kl_per_point = summary["decoder_parameter_kl_per_datapoint"]
    assert kl_per_point > 0 and summary["full_train_bound"] == pytest.approx(summary["train_bound"] - kl_per_point)

    assert (
        call(
            [
                "evaluate",
                run,
                "--nll",
                "--k",
                "20",
                "--parameter-draws",
                "3",
                "--num-points",
                "60",
                "--samples",
                "5",
                "--json",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["parameter_draws"] == 3 and result["decoder_parameter_kl_per_datapoint"] == pytest.approx(
        kl_per_point
    )
    assert math.isfinite(result["log_likelihood"]) and result["log_likelihood_stderr"] > 0
    # the predictive log p(x) is above the bound E_q(θ)[𝓛] (Jensen) up to Monte Carlo error
    assert result["log_likelihood"] > result["test_bound"] - 1.0
    assert call(["evaluate", run, "--split", "train", "--num-points", "60", "--samples", "2", "--json"]) == 0
    train = json.loads(capsys.readouterr().out)
    assert train["train_full_bound"] == pytest.approx(
        train["train_bound"] - train["decoder_parameter_kl_per_datapoint"]
    )
    assert call(["evaluate", run, "--hmc", "--num-points", "2"]) == 2

    # samples decode with θ = μ_θ: the same images as the decoder's own parameters give
    assert call(["sample", run, "--num", "4", "--seed", "3", "--out", tmp_path / "s.npy", "--device", "cpu"]) == 0
    from aevb.runs import load_run

    model, _ = load_run(run, device="cpu")
    assert isinstance(model, FullVBVAE)
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert np.allclose(np.load(tmp_path / "s.npy"), model.decoder.mean(z).numpy())


def test_a_step_reports_the_minibatch_share_of_the_full_bound_and_follows_its_gradient():
    """What the trainer sums (and the step-size selection ranks by) is Σ_i 𝓛̃_θ̃(x⁽ⁱ⁾) − (M/N) KL."""
    model = tiny_model(seed=3)
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    algorithm = FullVariationalBayes(prior_precision=2.0)
    algorithm.setup(model, torch.rand(40, 4, dtype=torch.float64))
    torch.manual_seed(11)
    expected = full_bound_estimate(model, x, 40, 2.0)
    expected.per_datapoint.backward()
    gradient = {name: p.grad.clone() for name, p in model.named_parameters()}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    torch.manual_seed(11)
    reported = algorithm.step(model, torch.optim.SGD(model.parameters(), lr=0.1), x, torch.arange(5))
    assert reported.item() == pytest.approx(5 * expected.per_datapoint.item(), rel=1e-12)
    for name, p in model.named_parameters():  # one step up the full bound: θ + 0.1 ∇
        assert torch.allclose(p.detach(), before[name] + 0.1 * gradient[name], rtol=0, atol=1e-12), name


def test_the_step_size_selection_measures_divergence_on_the_full_bound():
    """At small N the KL term is most of the full bound the steps report; the divergence floor,
    set from the untrained model's evaluated bound, must be moved by it too, or every candidate
    'diverges' before it starts (Frey Face with N = 100 at the authors' initialisation)."""
    torch.manual_seed(0)
    data = torch.rand(20, 12)
    config = TrainConfig(batch_size=10, max_samples=2000, selection_steps=100, seed=1)  # one divergence check
    model, trainer, result = _train(data, config)
    algorithm = trainer.algorithm
    evaluated = -8.0
    kl_per_point = model.decoder_parameter_kl(1.0).item() / 20
    assert kl_per_point > 2 * 8.0  # the KL term dominates, as at N = 100 on Frey Face
    assert algorithm.step_bound(model, evaluated) == pytest.approx(evaluated - kl_per_point)
    assert result.step_size in config.step_size_candidates
    assert all(math.isfinite(trial.mean_bound) for trial in result.step_size_trials)


def test_the_full_vb_experiment_reports_a_refused_run_in_one_line(tmp_path, capsys):
    from aevb.experiments.full_vb import main

    arguments = ["--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "out"), "--datasets", "frey"]
    assert main([*arguments, "--train-sizes", "100", "--max-samples", "1000"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and "Traceback" not in error
