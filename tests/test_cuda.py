"""What only a GPU can check: the engines, the estimators and a whole run on CUDA, against the same
code on the CPU. Skipped without CUDA (``benchmarks/gpu_check.sh`` runs them where there is one)."""

from __future__ import annotations

import math

import pytest
import torch

from aevb import VAE, ModelConfig, TrainConfig, Trainer
from aevb.engines import EngineRequest, engine_class
from aevb.evaluation import evaluate_bound
from aevb.evaluation.importance_sampling import estimate_log_likelihood
from aevb.objectives.estimators import get_estimator
from aevb.training import AEVB
from aevb.training.optimizers import Adagrad

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA = torch.device("cuda")


def test_auto_takes_the_fused_engine_on_cuda():
    model = VAE(ModelConfig(data_dim=6, latent_dim=2, hidden_units=4)).to(CUDA)
    request = EngineRequest(model, get_estimator("B"), "B", 1, CUDA)
    assert engine_class("auto", request).name == "fused"


@pytest.mark.parametrize("estimator", ["A", "B", "IWAE"])
def test_the_fused_engine_on_cuda_takes_autograds_step(estimator):
    def train(engine):
        torch.manual_seed(0)
        model = VAE(ModelConfig(data_dim=8, latent_dim=3, hidden_units=6, init_std=0.3)).double().to(CUDA)
        algorithm = AEVB(estimator, 2, engine)
        x = torch.rand(5, 8, dtype=torch.float64, device=CUDA).round()
        algorithm.setup(model, x)
        optimizer = Adagrad(model.parameters(), lr=0.05)
        torch.manual_seed(1)
        bounds = [algorithm.step(model, optimizer, x, torch.arange(5, device=CUDA)).item() for _ in range(3)]
        return bounds, [p.detach().cpu() for p in model.parameters()]

    reference, fused = train("autograd"), train("fused")
    assert fused[0] == pytest.approx(reference[0], rel=1e-10)
    for got, expected in zip(fused[1], reference[1]):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_a_run_on_cuda_matches_the_cpu_in_distribution():
    """The same model trained on CUDA and on the CPU (different random streams): final bounds within
    a couple of nats, and the bound and log p(x) of one model equal on both devices within their
    Monte Carlo errors."""
    data = torch.rand(2000, 20, generator=torch.Generator().manual_seed(0)).lt(0.3).float()
    bounds = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = VAE(ModelConfig(data_dim=20, latent_dim=3, hidden_units=16)).to(device)
        result = Trainer(model, data.to(device), TrainConfig(step_size=0.05, max_samples=100_000)).fit()
        bounds[device] = result.history[-1].train_bound
        assert math.isfinite(bounds[device])
    assert abs(bounds["cuda"] - bounds["cpu"]) < 2.0
    model = model.cpu()
    cpu = estimate_log_likelihood(model, data[:200], num_samples=500)
    gpu = estimate_log_likelihood(model.to(CUDA), data[:200].to(CUDA), num_samples=500)
    assert abs(gpu.mean - cpu.mean) < 5 * math.hypot(cpu.stderr, gpu.stderr) + 1e-3
    cpu_bound = evaluate_bound(model.cpu(), data[:500], num_samples=50)
    gpu_bound = evaluate_bound(model.to(CUDA), data[:500].to(CUDA), num_samples=50)
    assert abs(gpu_bound.mean - cpu_bound.mean) < 5 * math.hypot(cpu_bound.stderr, gpu_bound.stderr)


def _estimators_without_an_encoder_are_right(device: torch.device) -> None:
    from aevb.evaluation.hmc_estimator import hmc_log_likelihood
    from aevb.models.factor_analysis import exact_log_likelihood, marginal, random_factor_analysis_vae

    torch.manual_seed(0)
    model = random_factor_analysis_vae(data_dim=5, latent_dim=2, seed=1)
    x = marginal(model).sample((200,))
    exact = exact_log_likelihood(model, x).mean().item()
    model, x = model.to(device), x.to(device)
    estimate, _ = hmc_log_likelihood(
        model, x, initial="importance-resampled", generator=torch.Generator().manual_seed(0)
    )
    assert abs(estimate.mean - exact) < 0.05, (estimate.mean, exact)
    prior_only = estimate_log_likelihood(model, x, num_samples=20_000, prior_mixture=1.0)
    assert abs(prior_only.mean - exact) < 4 * prior_only.stderr + 0.01, (prior_only.mean, exact)


def test_estimators_without_an_encoder_on_cuda():
    """App. D with resampled prior starts, and prior importance sampling (a run that trained no
    encoder), on CUDA tensors: right against factor analysis's exact log p(x)."""
    _estimators_without_an_encoder_are_right(CUDA)
