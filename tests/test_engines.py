"""The engines' seam (aevb.engines): one selection function, one training step whatever the engine,
and the hand-derived pieces checked against the torch references they replace — the activations
of aevb.models.networks (modules and their autograd derivatives), App. B's KL against the KL registry,
the bounded log-variance's derivative against autograd."""

import math

import pytest
import torch
from torch import nn
from torch.distributions import kl_divergence

from aevb import VAE, ModelConfig
from aevb.engines import AUTO_ORDER, ENGINES, EngineRequest, engine_class, select_engine
from aevb.engines.activations import FUSED_ACTIVATIONS
from aevb.engines.autograd import AutogradEngine
from aevb.engines.fused import FusedStep
from aevb.engines.native import native_unavailable_reason
from aevb.errors import AevbError
from aevb.models import networks
from aevb.models.build import build_model
from aevb.models.distributions import diagonal_gaussian, gaussian_kl_to_standard_normal, standard_normal_prior
from aevb.objectives.estimators import get_estimator
from aevb.training import AEVB, TrainConfig, Trainer
from aevb.training.optimizers import Adagrad, Adam

NATIVE = native_unavailable_reason(torch.device("cpu"), torch.float32) is None


def _request(model, estimator="B", device="cpu", dtype=torch.float32, objective=None):
    return EngineRequest(model, objective or get_estimator(estimator or "A"), estimator, 1, torch.device(device), dtype)


def _reference_derivative(module: nn.Module, a: torch.Tensor) -> torch.Tensor:
    a = a.detach().clone().requires_grad_(True)
    (derivative,) = torch.autograd.grad(module(a).sum(), a)
    return derivative


@pytest.mark.parametrize("name", sorted(FUSED_ACTIVATIONS))
def test_every_fused_activation_is_the_reference_module_and_its_autograd_derivative(name):
    a = torch.cat(
        [torch.randn(5000, dtype=torch.float64) * 3, torch.tensor([0.0, 1e-8, -1e-8, 25.0, -25.0], dtype=torch.float64)]
    )
    reference = networks.ACTIVATIONS[name]()
    fused = FUSED_ACTIVATIONS[name]
    h = fused.forward(a, torch.empty_like(a))
    torch.testing.assert_close(h, reference(a), rtol=1e-12, atol=1e-14)
    grad = torch.randn_like(a)
    expected = grad * _reference_derivative(reference, a)
    fused.backward(grad, a, h)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_app_b_kl_is_the_kl_registrys():
    mean, log_var = torch.randn(7, 4, dtype=torch.float64) * 2, torch.randn(7, 4, dtype=torch.float64) * 3
    registry = kl_divergence(diagonal_gaussian(mean, log_var), standard_normal_prior(4, dtype=torch.float64))
    torch.testing.assert_close(gaussian_kl_to_standard_normal(mean, log_var), registry, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bound", [None, 5.0, 30.0])
def test_the_bounded_log_variances_hand_derivative_is_autogradss(bound):
    model = VAE(ModelConfig(data_dim=3, latent_dim=2, hidden_units=2, log_variance_bound=bound)).double()
    step = FusedStep(model, "B", 1, 2)
    raw = (torch.randn(50, dtype=torch.float64) * 8).requires_grad_(True)
    log_var = networks.bounded_log_variance(raw, bound)
    upstream = torch.randn(50, dtype=torch.float64)
    (expected,) = torch.autograd.grad(log_var, raw, upstream)
    grad = upstream.clone()
    step._through_bound_(grad, log_var.detach())
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_auto_takes_the_fastest_engine_that_serves_and_a_request_names_why_it_cannot():
    plain = VAE(ModelConfig(data_dim=6, latent_dim=2, hidden_units=4))
    assert engine_class("auto", _request(plain)).name == ("native" if NATIVE else "fused")
    assert engine_class("auto", _request(plain.double(), dtype=torch.float64)).name == "fused"
    assert engine_class("auto", _request(plain, device="meta")).name == "fused"
    conv = build_model(ModelConfig(data_dim=16, latent_dim=2, architecture="conv", image_shape=(4, 4)))
    assert engine_class("auto", _request(conv)).name == "autograd"
    assert engine_class("auto", _request(plain, estimator=None)).name == "autograd"  # an objective of its own
    with pytest.raises(
        AevbError,
        match=r"^`engine` native cannot train this model: the native kernels run in "
        r"float32 on a CPU$",
    ):
        engine_class("native", _request(plain.double(), dtype=torch.float64))
    with pytest.raises(AevbError, match="`engine` fused cannot train this model: conv networks"):
        engine_class("fused", _request(conv))
    with pytest.raises(AevbError, match="unknown engine 'jax'; choose one of auto, native, fused, autograd"):
        engine_class("jax", _request(plain))
    assert list(AUTO_ORDER)[-1] == "autograd" and set(AUTO_ORDER) == set(ENGINES)


def test_the_native_engine_steps_aside_when_turned_off(monkeypatch):
    from aevb import native

    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setenv("AEVB_NATIVE", "0")
    plain = VAE(ModelConfig(data_dim=6, latent_dim=2, hidden_units=4))
    assert engine_class("auto", _request(plain)).name == "fused"
    with pytest.raises(AevbError, match="native kernels are unavailable"):
        engine_class("native", _request(plain))


def test_an_activation_added_to_the_networks_alone_trains_with_autograd(monkeypatch):
    """Adding an activation is one line in aevb.models.networks; the hand-derived engines step aside."""
    monkeypatch.setitem(networks.ACTIVATIONS, "gelu", nn.GELU)
    model = VAE(ModelConfig(data_dim=6, latent_dim=2, hidden_units=4, activation="gelu"))
    assert engine_class("auto", _request(model)).name == "autograd"
    with pytest.raises(AevbError, match="activation gelu has no fused derivative"):
        engine_class("fused", _request(model))
    result = Trainer(
        model, torch.rand(40, 6).round(), TrainConfig(step_size=0.05, max_samples=200, batch_size=10, first_eval=200)
    ).fit()
    assert math.isfinite(result.history[-1].train_bound)


def test_a_new_engine_is_one_registered_class(monkeypatch):
    """Registered under a name, it is chosen by the ``engine`` setting and its gradient is used by
    the one training step, whose guard and optimiser are the same for every engine."""
    calls = []

    class CountingEngine(AutogradEngine):
        name = "counting"
        description = "autograd, counted"

        def gradient(self, x, noise=None, shard=None):
            calls.append(x.shape[0])
            return super().gradient(x, noise, shard)

    monkeypatch.setitem(ENGINES, "counting", CountingEngine)
    model = VAE(ModelConfig(data_dim=6, latent_dim=2, hidden_units=4))
    trainer = Trainer(
        model,
        torch.rand(40, 6).round(),
        TrainConfig(step_size=0.05, max_samples=100, batch_size=10, first_eval=100, engine="counting"),
    )
    trainer.fit()
    assert calls == [10] * 10 and trainer.algorithm.engine_used == "autograd, counted"


@pytest.mark.parametrize("optimizer_type", [Adagrad, Adam])
@pytest.mark.parametrize("estimator", ["A", "B", "IWAE"])
def test_every_engine_takes_the_same_step(estimator, optimizer_type):
    """Three steps from the same start and noise: the same parameters from every engine (fused
    against autograd in float64, to 1e-10; native against autograd in float32). The native engine
    applies the update inside the step (Adam from its second step, once it has its state)."""

    def train(engine, dtype):
        torch.manual_seed(0)
        model = VAE(ModelConfig(data_dim=8, latent_dim=3, hidden_units=6, init_std=0.3)).to(dtype)
        algorithm = AEVB(estimator, 2, engine)
        x = torch.rand(5, 8, dtype=dtype).round()
        algorithm.setup(model, x)
        optimizer = optimizer_type(model.parameters(), lr=0.05)
        torch.manual_seed(1)
        bounds = [algorithm.step(model, optimizer, x, torch.arange(5)).item() for _ in range(3)]
        return bounds, [p.detach().double() for p in model.parameters()]

    cases = [("autograd", "fused", torch.float64, 1e-10)]
    if NATIVE:  # (the same draws of x and ε need the same dtype)
        cases.append(("autograd", "native", torch.float32, 2e-5))
    for reference_engine, engine, dtype, tolerance in cases:
        reference = train(reference_engine, dtype)
        bounds, parameters = train(engine, dtype)
        assert bounds == pytest.approx(reference[0], rel=tolerance)
        for got, expected in zip(parameters, reference[1]):
            torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)


def test_select_engine_builds_the_engine_the_run_reports():
    model = VAE(ModelConfig(data_dim=6, latent_dim=2, hidden_units=4))
    engine = select_engine("autograd", _request(model))
    assert isinstance(engine, AutogradEngine) and engine.description == "autograd"
