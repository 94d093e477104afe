"""The fused training step (aevb.engines.fused) computes the same bound and gradients as autograd on the
estimators of §2.3, for every configuration it accepts — checked in float64 to 1e-10."""

import itertools
import math

import pytest
import torch
from torch import nn

from aevb import VAE, ModelConfig
from aevb.engines.fused import FusedStep, unsupported_reason
from aevb.engines.native import NativeStep
from aevb.evaluation.decoding import fast_decoder_log_prob, fast_importance_weights, fast_importance_weights_apply
from aevb.objectives.estimators import get_estimator, log_importance_weights


def _autograd(model, x, estimator, samples, seed):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    bound = get_estimator(estimator)(model, x, samples)
    (-bound.mean()).backward()
    return bound.sum().item(), {name: p.grad.clone() for name, p in model.named_parameters()}


def _fused(model, x, estimator, samples, seed, batch_size):
    step = FusedStep(model, estimator, samples, batch_size)
    torch.manual_seed(seed)
    bound = step(x).item()
    return bound, {name: p.grad.clone() for name, p in model.named_parameters()}


CONFIGS = [
    # (likelihood, sigmoid mean, decoder variance, activation, hidden layers[, log-variance bound])
    ("bernoulli", False, "network", "tanh", 1),
    ("bernoulli", False, "network", "relu", 2),
    ("bernoulli", False, "network", "softplus", 0),
    ("gaussian", True, "network", "tanh", 1),
    ("gaussian", False, "network", "elu", 2),
    ("gaussian", False, "per-dimension", "sigmoid", 1),
    ("gaussian", True, "per-dimension", "tanh", 0),
    ("bernoulli", False, "network", "tanh", 1, 0.7),
    ("gaussian", True, "network", "relu", 1, 0.7),
    ("gaussian", False, "per-dimension", "tanh", 1, 0.7),
]


@pytest.mark.parametrize("config, estimator, samples", list(itertools.product(CONFIGS, ["A", "B", "IWAE"], [1, 3])))
def test_fused_gradients_equal_autograd(config, estimator, samples):
    likelihood, sigmoid_mean, variance, activation, layers, *bound = config
    torch.manual_seed(0)
    model = VAE(
        ModelConfig(
            data_dim=7,
            latent_dim=3,
            hidden_units=5,
            hidden_layers=layers,
            activation=activation,
            likelihood=likelihood,
            sigmoid_mean=sigmoid_mean,
            decoder_variance=variance,
            init_std=0.5,
            log_variance_bound=(bound or [None])[0],
        )
    ).double()
    if variance == "per-dimension":  # a per-dimension variance away from zero, where the bound bends
        with torch.no_grad():
            model.decoder.log_var.uniform_(-1.0, 1.0)
    x = torch.rand(6, 7, dtype=torch.float64)
    if likelihood == "bernoulli":
        x = torch.bernoulli(x)
    expected_bound, expected = _autograd(model, x, estimator, samples, seed=5)
    # A buffer larger than the minibatch: the last minibatch of an epoch is smaller.
    bound, grads = _fused(model, x, estimator, samples, seed=5, batch_size=10)
    assert bound == pytest.approx(expected_bound, rel=1e-10, abs=1e-10)
    for name, grad in expected.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-9, atol=1e-11, msg=name)


def test_fused_step_refuses_what_it_cannot_differentiate():
    model = VAE(ModelConfig(data_dim=4, latent_dim=2, hidden_units=3))

    class Subclass(VAE):
        pass

    assert unsupported_reason(model, "B") is None
    assert "estimator" in unsupported_reason(model, "nope")
    assert "not an aevb VAE" in unsupported_reason(Subclass(model.config), "B")
    model.decoder.net.hidden.append(nn.Dropout())
    assert unsupported_reason(model, "B") == "network is not a plain MLP"
    with pytest.raises(ValueError):
        FusedStep(model, "B", 1, 10)


def _evaluation_model(config, seed: int) -> VAE:
    """A small float64 VAE of one of CONFIGS, for comparisons with its references at 1e-10."""
    likelihood, sigmoid_mean, variance, activation, layers, *bound = config
    torch.manual_seed(seed)
    return VAE(
        ModelConfig(
            data_dim=7,
            latent_dim=3,
            hidden_units=5,
            hidden_layers=layers,
            activation=activation,
            likelihood=likelihood,
            sigmoid_mean=sigmoid_mean,
            decoder_variance=variance,
            init_std=0.5,
            log_variance_bound=(bound or [None])[0],
        )
    ).double()


@pytest.mark.parametrize("config", CONFIGS)
def test_fast_decoder_log_prob_equals_the_distribution(config):
    model = _evaluation_model(config, seed=1)
    x, z = torch.rand(4, 7, dtype=torch.float64), torch.randn(6, 4, 3, dtype=torch.float64)
    with torch.no_grad():
        fast = fast_decoder_log_prob(model, z, x)
        expected = model.decode(z).log_prob(x)
    assert fast is not None and fast.shape == (6, 4)
    torch.testing.assert_close(fast, expected, rtol=1e-12, atol=1e-10)
    assert fast_decoder_log_prob(model, z, x) is None  # gradients wanted: the generic path


@pytest.mark.parametrize("config", CONFIGS)
def test_fast_importance_weights_equal_the_reference(config):
    model = _evaluation_model(config, seed=2)
    x, noise = torch.rand(4, 7, dtype=torch.float64), torch.randn(6, 4, 3, dtype=torch.float64)
    with torch.no_grad():
        assert fast_importance_weights_apply(model)
        posterior = model.encode(x)
        fast = fast_importance_weights(model, x, posterior.mean, posterior.stddev, 6, noise=noise)
        expected = log_importance_weights(model, x, 6, noise=noise)
    assert fast.shape == (6, 4)
    torch.testing.assert_close(fast, expected, rtol=1e-12, atol=1e-10)
    assert not fast_importance_weights_apply(model)  # gradients wanted: the reference


@pytest.mark.parametrize("estimator", ["A", "B", "IWAE"])
def test_the_bound_is_evaluated_on_the_fast_path_with_the_reference_numbers(monkeypatch, estimator):
    """Evaluation hands the estimators the fast log p(x|z) (aevb.evaluation.decoding); the
    estimators themselves (aevb.objectives) compute the reference with the same draws."""
    import aevb.evaluation.decoding as decoding
    from aevb.evaluation import per_datapoint_bound

    model = _evaluation_model(CONFIGS[0], seed=4)
    x = torch.rand(5, 7, dtype=torch.float64)
    served = []
    fast_path = decoding.fast_decoder_log_prob
    monkeypatch.setattr(decoding, "fast_decoder_log_prob", lambda *args: served.append(fast_path(*args)) or served[-1])
    torch.manual_seed(5)
    evaluated = per_datapoint_bound(model, x, estimator=estimator, num_samples=3)
    assert served and all(value is not None for value in served)  # the fast path applied every time
    torch.manual_seed(5)
    with torch.no_grad():
        reference = get_estimator(estimator)(model, x, 3)
    torch.testing.assert_close(evaluated, reference, rtol=1e-12, atol=1e-10)


def test_importance_sampling_gives_the_same_estimate_on_the_fast_path_and_the_reference(monkeypatch):
    import aevb.evaluation.importance_sampling as importance_sampling

    torch.manual_seed(3)
    model = VAE(ModelConfig(data_dim=30, latent_dim=2, hidden_units=20, init_std=0.5))
    x = torch.bernoulli(torch.full((6, 30), 0.3))
    used = []
    monkeypatch.setattr(
        importance_sampling,
        "fast_importance_weights",
        lambda *args, **kwargs: used.append(1) or fast_importance_weights(*args, **kwargs),
    )
    fast = importance_sampling.estimate_log_likelihood(model, x, num_samples=3000, max_rows=700)
    assert used  # the fast path served this VAE
    monkeypatch.setattr(importance_sampling, "fast_importance_weights_apply", lambda model: False)
    reference = importance_sampling.estimate_log_likelihood(model, x, num_samples=3000, max_rows=700)
    combined = (fast.per_datapoint_stderr**2 + reference.per_datapoint_stderr**2).sqrt()
    assert ((fast.per_datapoint - reference.per_datapoint).abs() < 5 * combined + 1e-6).all()


def test_a_log_variance_bound_keeps_every_variance_finite():
    model = VAE(ModelConfig(data_dim=4, latent_dim=2, hidden_units=3, likelihood="gaussian", log_variance_bound=5.0))
    with torch.no_grad():  # outputs that would overflow exp() without the bound
        model.encoder.net.heads.bias[2:] = 1e4
        model.decoder.net.heads.bias[4:] = -1e4
    x = torch.rand(3, 4)
    q = model.encode(x)
    assert torch.allclose(q.base_dist.scale, torch.full_like(q.base_dist.scale, math.exp(2.5)))
    assert torch.isfinite(model.decode(q.rsample()).log_prob(x)).all()
    step = FusedStep(model, "B", 1, 3)
    assert torch.isfinite(step(x)) and all(torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(Exception, match="log_variance_bound"):
        ModelConfig(data_dim=4, log_variance_bound=0.0)


def test_gradients_live_in_one_flat_buffer_even_after_someone_drops_them():
    """The fused step's gradients are views of ``flat_gradient`` (the numeric guard and the
    multi-process all-reduce read it in one piece); a gradient set to None or replaced between
    steps is put back into the buffer, and the next step's gradients are still exact."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(data_dim=7, latent_dim=2, hidden_units=5)).double()
    x = torch.rand(6, 7, dtype=torch.float64)
    step = FusedStep(model, "B", 1, 6)
    for tamper in (None, "drop", "replace"):
        if tamper == "drop":
            model.decoder.net.heads.weight.grad = None
        elif tamper == "replace":
            model.encoder.net.heads.bias.grad = torch.full_like(model.encoder.net.heads.bias, 5.0)
        torch.manual_seed(1)
        step(x)
        flat = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        assert torch.equal(step.flat_gradient, flat)
        assert all(p.grad.data_ptr() >= step.flat_gradient.data_ptr() for p in model.parameters())
        fused = {name: p.grad.clone() for name, p in model.named_parameters()}
        _, expected = _autograd(model, x, "B", 1, seed=1)
        for name, value in expected.items():
            torch.testing.assert_close(fused[name], value, rtol=1e-9, atol=1e-12)
        for p, view in zip(step.parameters, step._gradient_views):  # (autograd replaced them)
            p.grad = view


@pytest.mark.parametrize("use_native", [False, True], ids=["torch-operations", "native-kernels"])
@pytest.mark.parametrize("estimator", ["A", "B", "IWAE"])
@pytest.mark.parametrize("huge", ["log-likelihood", "posterior-variance"])
def test_a_bound_beyond_float32s_range_is_a_non_finite_step_not_an_error(huge, estimator, use_native):
    """Issue 14. Every term fits float32 but the minibatch's total does not: −1e37 nats a pixel
    (logits of 1e37 where x = 0), or posterior variances e⁸⁸ ≈ 1.7e38 (an unbounded log σ², as a
    diverging run reaches) in the KL. The step reports a non-finite bound, as autograd's float32
    sum does, and the optimiser inside the native step skips the update: no "cannot be converted
    to type float without overflow"."""
    from aevb import native
    from aevb.training.optimizers import Adagrad

    if use_native and native.load() is None:
        pytest.skip("native kernels could not be built here")
    torch.manual_seed(0)
    model = VAE(
        ModelConfig(data_dim=20, latent_dim=2, hidden_units=5, log_variance_bound=None)
    )  # unbounded: a log σ² of 88
    with torch.no_grad():
        if huge == "log-likelihood":
            model.decoder.net.heads.bias.fill_(1e37)
        else:
            model.encoder.net.heads.bias[2:] = 88.0
    x = torch.zeros(4, 20)
    step = (NativeStep if use_native else FusedStep)(model, estimator, 1, 4)
    assert not torch.isfinite(step(x))
    if use_native:
        optimizer = Adagrad(model.parameters(), lr=0.05)
        before = [p.detach().clone() for p in model.parameters()]
        assert not torch.isfinite(step(x, optimizer=optimizer)) and step.skipped
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_a_diverging_run_on_the_fused_engine_rolls_back_and_stops_with_one_error_line(tmp_path, capsys):
    """Issue 14: a step size far too large on the default (fused) engine went from a float32
    overflow of the bound to a traceback; like autograd, it must roll back and end cleanly."""
    import warnings

    from aevb.cli import main

    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings(record=True) as rollbacks:  # one per rollback (aevb.training)
            warnings.simplefilter("always")
            status = main(
                [
                    "train",
                    "--hidden-units",
                    "50",
                    "--latent-dim",
                    "5",
                    "--max-samples",
                    "5e4",
                    "--threads",
                    "1",
                    "--step-size",
                    "60",
                    "--log-variance-bound",
                    "0",
                    "--eval-subset",
                    "1000",
                    "--no-progress",
                    "--out",
                    str(tmp_path / "run"),
                ]
            )
    finally:
        torch.set_num_threads(threads)
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert (
        status == 0
        and not errors
        or status == 2
        and len(errors) == 1
        and len(rollbacks) > 0
        and errors[0].startswith("aevb train: error: training diverged")
    ), errors
