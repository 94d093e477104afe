"""The native kernels (aevb.native) against the float64 torch references they replace (the
activation modules of aevb.models.networks and their autograd derivatives, the decoder's Bernoulli
log_prob), and the native step (aevb.engines.native) against the same step in torch operations, for every configuration the fused step accepts.
Without a C compiler these tests skip (the fused step then runs on torch operations)."""

import itertools
import math
import os
import platform
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import torch
from test_fused import CONFIGS

from aevb import VAE, ModelConfig, native
from aevb.engines.fused import FusedStep
from aevb.engines.native import NativeStep, native_unavailable_reason
from aevb.models.distributions import bernoulli_from_logits
from aevb.models.networks import ACTIVATIONS
from aevb.native import build as native_build
from aevb.native.bindings import ACTIVATION_CODES, SparseRows

KERNELS = native.load()
needs_kernels = pytest.mark.skipif(KERNELS is None, reason="native kernels could not be built here")
# The rounding of torch's fused CPU Adam that aevb_adam restates was measured on x86-64 (its
# vector width and fused multiply-adds); elsewhere the two may part in the last bit.
torchs_adam_rounding_known = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="torch's fused Adam rounding was measured on x86-64"
)


def fused_step(model, estimator, samples, batch_size, use_native=None):
    """The fused step as the engine selection takes it: on the native kernels where they serve
    (``use_native`` None), or as asked (True raises where they cannot)."""
    if use_native is None:
        use_native = native_unavailable_reason(torch.device("cpu"), next(model.parameters()).dtype) is None
    return (NativeStep if use_native else FusedStep)(model, estimator, samples, batch_size)


NATIVE_ACTIVATIONS = sorted(ACTIVATION_CODES)


def _reference(activation, a):
    """The activation as the model computes it: the module of aevb.models.networks.ACTIVATIONS."""
    return ACTIVATIONS[activation]()(a)


def _reference_derivative(activation, a):
    """Its derivative by autograd on that module."""
    a = a.detach().clone().requires_grad_(True)
    (derivative,) = torch.autograd.grad(_reference(activation, a).sum(), a)
    return derivative


def _inputs(seed=0):
    """Typical, large and tiny values, and the edges of float32's exp."""
    generator = torch.Generator().manual_seed(seed)
    return torch.cat(
        [
            torch.randn(20000, generator=generator) * 3,
            torch.randn(2000, generator=generator) * 40,
            torch.tensor(
                [
                    0.0,
                    -0.0,
                    1e-8,
                    -1e-8,
                    1e-30,
                    0.6249,
                    0.6251,
                    -0.625,
                    30.0,
                    -30.0,
                    87.0,
                    -87.0,
                    89.0,
                    -89.0,
                    1e3,
                    -1e3,
                ]
            ),
        ]
    )


@needs_kernels
@pytest.mark.parametrize("activation", NATIVE_ACTIVATIONS)
def test_activations_match_float64_to_float32_rounding(activation):
    a = _inputs()
    out = torch.empty_like(a)
    KERNELS.activation_forward(a, out, activation)
    expected = _reference(activation, a.double())
    torch.testing.assert_close(out.double(), expected, rtol=4e-7, atol=2e-38)


@needs_kernels
@pytest.mark.parametrize("activation", NATIVE_ACTIVATIONS)
def test_non_finite_inputs_give_what_torch_gives(activation):
    a = torch.tensor([float("nan"), float("inf"), -float("inf")])
    out = torch.empty_like(a)
    KERNELS.activation_forward(a, out, activation)
    assert torch.isnan(out[0])
    expected = _reference(activation, a[1:])
    torch.testing.assert_close(out[1:], expected, rtol=0, atol=2e-38)


@needs_kernels
@pytest.mark.parametrize("activation", [*NATIVE_ACTIVATIONS, None])
def test_activation_backward_and_bias_sums(activation):
    generator = torch.Generator().manual_seed(1)
    rows, cols = 37, 203  # not a multiple of the kernels' 64-column blocks
    a = torch.randn(rows, cols, generator=generator) * 2
    h = a.clone() if activation is None else _reference(activation, a)
    grad = torch.randn(rows, cols, generator=generator)
    expected = grad.double() * (1 if activation is None else _reference_derivative(activation, a.double()))
    bias_grad = torch.empty(cols)
    KERNELS.activation_backward(grad, a, h, activation, bias_grad)
    # The kernels take f′ from the float32 output h (h(1 − h), 1 − h²), whose rounding (up to
    # 6e-8) carries into f′ against the exact float64 derivative: |grad| ≤ 4 here, so 4e-7.
    torch.testing.assert_close(grad.double(), expected, rtol=1e-6, atol=4e-7)
    torch.testing.assert_close(bias_grad.double(), expected.sum(dim=0), rtol=1e-5, atol=1e-5)


@needs_kernels
@pytest.mark.parametrize("samples", [1, 3])
def test_bernoulli_log_likelihood_and_gradient(samples):
    generator = torch.Generator().manual_seed(2)
    points, dim = 11, 50
    logits = torch.randn(samples * points, dim, generator=generator) * 6
    x = torch.rand(points, dim, generator=generator)
    x[:5] = x[:5].round()  # binary and grey-level rows
    x_rows = x.double().repeat(samples, 1)
    reference_logits = logits.double().requires_grad_(True)
    expected_log_lik = bernoulli_from_logits(reference_logits).log_prob(x_rows)  # the decoder's own log p
    (expected_grad,) = torch.autograd.grad(-0.25 * expected_log_lik.sum(), reference_logits)  # loss gradient, w = 0.25
    expected_log_lik = expected_log_lik.detach()
    log_lik = torch.empty(samples * points)
    grad = logits.clone()
    KERNELS.bernoulli(grad, x, samples, 0.25, log_lik)
    torch.testing.assert_close(log_lik.double(), expected_log_lik, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-6, atol=5e-8)  # float32 rounding of 0.25·O(1)


@needs_kernels
def test_kernels_give_the_same_bits_on_any_number_of_threads():
    """Threads split rows or columns only; every sum keeps its order."""
    generator = torch.Generator().manual_seed(3)
    a = torch.randn(300, 700, generator=generator)
    grad = torch.randn(300, 700, generator=generator)
    x = torch.rand(100, 700, generator=generator).round()
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            out, g, bias = torch.empty_like(a), grad.clone(), torch.empty(700)
            KERNELS.activation_forward(a, out, "tanh")
            KERNELS.activation_backward(g, a, out, "tanh", bias)
            logits, log_lik = a.clone(), torch.empty(300)
            KERNELS.bernoulli(logits, x, 3, 0.01, log_lik)
            # the Gaussian decoder: [mean, raw log σ²] of width 2·350, and a shared log σ² (65 rows: an
            # epoch's last minibatch of Frey Face, whose torch operations split unevenly among threads)
            gaussian_grad, gaussian_log_lik = torch.empty(300, 700), torch.empty(300)
            KERNELS.gaussian(a, x[:, :350], 3, 30.0, True, None, gaussian_grad, None, gaussian_log_lik)
            shared_grad, var_rows, shared_log_lik = torch.empty(65, 700), torch.empty(65, 700), torch.empty(65)
            KERNELS.gaussian(a[:65], x[:65], 1, None, False, a[0], shared_grad, var_rows, shared_log_lik)
            results.append(
                (out, g, bias, logits, log_lik, gaussian_grad, gaussian_log_lik, shared_grad, var_rows, shared_log_lik)
            )
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for first, second in zip(results[0], other):
            assert torch.equal(first, second)


def _model(config):
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
    )
    if variance == "per-dimension":
        with torch.no_grad():
            model.decoder.log_var.uniform_(-1.0, 1.0)
    return model


@needs_kernels
@pytest.mark.parametrize("config, estimator, samples", list(itertools.product(CONFIGS, ["A", "B", "IWAE"], [1, 3])))
def test_native_step_equals_the_torch_step(config, estimator, samples):
    """The torch step equals autograd in float64 (test_fused); the native one equals it in float32."""
    model = _model(config)
    x = torch.rand(6, 7)
    if config[0] == "bernoulli":
        x = torch.bernoulli(x)
    results = []
    for use_native in (False, True):
        step = fused_step(model, estimator, samples, batch_size=10, use_native=use_native)
        assert isinstance(step, NativeStep) == use_native
        torch.manual_seed(5)
        bound = step(x).item()
        results.append((bound, {name: p.grad.clone() for name, p in model.named_parameters()}))
    (torch_bound, torch_grads), (native_bound, native_grads) = results
    assert native_bound == pytest.approx(torch_bound, rel=1e-6, abs=1e-5)
    for name, grad in torch_grads.items():
        scale = grad.abs().max().item() + 1e-12
        torch.testing.assert_close(native_grads[name], grad, rtol=1e-5, atol=2e-6 * scale, msg=name)


def _optimizer(name, parameters, **settings):
    from aevb.training.optimizers import OPTIMIZERS

    return OPTIMIZERS[name](parameters, **settings)


def _step_with(step, x, optimizer):
    """One step as the native engine takes it: the update inside where the step can apply it
    (Adam only from its second step, once its state exists), else optimizer.step() after it."""
    from aevb.training.optimizers import guarded_step, non_finite

    if step.applies_optimizer(optimizer):
        return step(x, optimizer=optimizer)
    bound = step(x)
    guarded_step(optimizer, non_finite(step.parameters, bound, step.flat_gradient))
    return bound


def _assert_same_optimizer_state(ours, theirs, optimizer):
    assert ours.keys() == theirs.keys()
    for index, entry in theirs.items():
        for name in (*optimizer.STATE, "step"):
            assert torch.equal(ours[index][name], entry[name]), (index, name)


@needs_kernels
@pytest.mark.parametrize(
    "optimizer_name, settings",
    [
        ("adagrad", dict(lr=0.01, weight_decay=1e-3)),
        pytest.param("adam", dict(lr=1e-3, weight_decay=1e-3, eps=1e-6), marks=torchs_adam_rounding_known),
    ],
)
def test_native_step_trains_the_paper_model_like_the_torch_step(one_thread, optimizer_name, settings):
    """Many steps on real shapes: torch step + optimiser, native step + optimiser, and the native
    step applying the optimiser itself. The last two are the same arithmetic: equal bit for bit."""
    from aevb.training.optimizers import guarded_step, non_finite

    x = torch.bernoulli(torch.rand(100, 784, generator=torch.Generator().manual_seed(4)) * 0.3)
    runs = {}
    for mode in ("torch", "native", "native, optimiser inside"):
        torch.manual_seed(0)
        model = VAE(ModelConfig(data_dim=784, latent_dim=20, hidden_units=500))
        step = fused_step(model, "B", 1, 100, use_native=mode != "torch")
        optimizer = _optimizer(optimizer_name, model.parameters(), **settings)
        bounds, inside = [], 0
        for _ in range(40):
            if mode == "native, optimiser inside":
                inside += step.applies_optimizer(optimizer)
                bounds.append(_step_with(step, x, optimizer).item() / 100)
                assert not step.skipped
            else:
                bound = step(x)
                guarded_step(optimizer, non_finite(step.parameters, bound, step.flat_gradient))
                bounds.append(bound.item() / 100)
        assert mode != "native, optimiser inside" or inside == (40 if optimizer_name == "adagrad" else 39)
        runs[mode] = (
            bounds,
            torch.nn.utils.parameters_to_vector(model.parameters()).detach(),
            optimizer.state_dict()["state"],
        )
    torch_bounds, torch_params, _ = runs["torch"]
    native_bounds, native_params, native_state = runs["native"]
    inside_bounds, inside_params, inside_state = runs["native, optimiser inside"]
    assert native_bounds[-1] > native_bounds[0] + 100  # it learns
    # float32 rounding differences grow over the steps (the early steps are chaotic), but stay small
    assert native_bounds == pytest.approx(torch_bounds, rel=1e-2)
    assert (native_params - torch_params).norm() < 1e-2 * torch_params.norm()
    assert inside_bounds == native_bounds and torch.equal(inside_params, native_params)
    _assert_same_optimizer_state(inside_state, native_state, optimizer)


@needs_kernels
@pytest.mark.parametrize("lr_decay", [0.0, 0.01])
def test_the_adagrad_kernel_is_torchs_arithmetic(lr_decay):
    generator = torch.Generator().manual_seed(6)
    for weight_decay in (0.0, 1e-3):
        for size in (392000, 500, 13):
            param = torch.randn(size, generator=generator)
            grad = torch.randn(size, generator=generator) * 10 ** (torch.rand(size, generator=generator) * 8 - 6)
            state_sum = torch.rand(size, generator=generator)
            step = torch.tensor(3.0)
            ours, our_sum, our_step = param.clone(), state_sum.clone(), step.clone()
            torch._foreach_add_([step], 1)  # as torch.optim.Adagrad does before its kernel
            torch._fused_adagrad_(
                [param],
                [grad],
                [state_sum],
                [step],
                lr=0.02,
                lr_decay=lr_decay,
                weight_decay=weight_decay,
                eps=1e-10,
                maximize=False,
            )
            KERNELS.adagrad(ours, grad, our_sum, our_step, 0.02, lr_decay, weight_decay, 1e-10)
            assert torch.equal(our_step, step)
            assert torch.equal(our_sum, state_sum) and torch.equal(ours, param)


@needs_kernels
@torchs_adam_rounding_known
@pytest.mark.parametrize("beta1", [0.9, 0.3])  # torch's lerp takes another form at weights ≥ 0.5
def test_the_adam_kernel_is_torchs_arithmetic(one_thread, beta1):
    """Bit for bit, with the elements past the last multiple of the vector width (13, 15, 2013)
    that torch computes in another order."""
    generator = torch.Generator().manual_seed(6)
    for weight_decay in (0.0, 1e-3):
        for size in (392000, 2013, 500, 15, 13):
            for count in (0.0, 3.0, 4000.0):
                param = torch.randn(size, generator=generator)
                grad = torch.randn(size, generator=generator) * 10 ** (torch.rand(size, generator=generator) * 8 - 6)
                exp_avg = torch.randn(size, generator=generator) * 0.01
                exp_avg_sq = torch.rand(size, generator=generator) * 1e-4
                step = torch.tensor(count)
                ours = [t.clone() for t in (param, exp_avg, exp_avg_sq, step)]
                torch._foreach_add_([step], 1)  # as torch.optim.Adam does before its kernel
                torch._fused_adam_(
                    [param],
                    [grad],
                    [exp_avg],
                    [exp_avg_sq],
                    [],
                    [step],
                    amsgrad=False,
                    lr=1e-3,
                    beta1=beta1,
                    beta2=0.999,
                    weight_decay=weight_decay,
                    eps=5e-6,
                    maximize=False,
                )
                KERNELS.adam(ours[0], grad, ours[1], ours[2], ours[3], 1e-3, beta1, 0.999, weight_decay, 5e-6)
                for mine, theirs in zip(ours, (param, exp_avg, exp_avg_sq, step)):
                    assert torch.equal(mine, theirs), (weight_decay, size, count)


@needs_kernels
def test_the_adam_kernel_gives_the_same_numbers_on_two_threads():
    generator = torch.Generator().manual_seed(8)
    size = 392003  # threads' shares, then the scalar tail
    start = [torch.randn(size, generator=generator) for _ in range(3)] + [torch.rand(size, generator=generator)]
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            param, grad, exp_avg, exp_avg_sq = (t.clone() for t in start)
            exp_avg_sq.mul_(1e-4)
            KERNELS.adam(param, grad, exp_avg, exp_avg_sq, torch.tensor(7.0), 1e-3, 0.9, 0.999, 1e-3, 1e-8)
            results.append((param, exp_avg, exp_avg_sq))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*results))


@needs_kernels
@pytest.mark.parametrize("optimizer_name", ["adagrad", "adagrad-warmup", "adam"])
@pytest.mark.parametrize("poison", ["nan-data", "inf-weight", "huge-input"])
def test_the_optimiser_inside_skips_a_step_with_a_non_finite_gradient(poison, optimizer_name):
    """Nothing moves — parameters, the optimiser's state, its step counts — and the step says so."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(data_dim=30, latent_dim=4, hidden_units=20, activation="relu"))
    step = fused_step(model, "B", 1, 8)
    optimizer = _optimizer(optimizer_name, model.parameters(), lr=0.05)
    x = torch.rand(8, 30).round()
    _step_with(step, x, optimizer)  # (Adam makes its state here)
    step(x, optimizer=optimizer)
    assert not step.skipped
    before = ([p.detach().clone() for p in model.parameters()], optimizer.state_dict())
    if poison == "nan-data":
        x[3, 5] = float("nan")
    elif poison == "inf-weight":
        with torch.no_grad():
            model.decoder.net.heads.weight[2, 1] = float("inf")
    else:  # finite, but the first layer's weight gradient could overflow float32
        x[0, 0] = 1e36
    step(x, optimizer=optimizer)
    assert step.skipped
    after_params = [p.detach() for p in model.parameters()]
    if poison != "inf-weight":
        assert all(torch.equal(a, b) for a, b in zip(before[0], after_params))
    _assert_same_optimizer_state(optimizer.state_dict()["state"], before[1]["state"], optimizer)


def test_turned_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("AEVB_NATIVE", "0")
    assert native.load() is None
    step = fused_step(VAE(ModelConfig(data_dim=4, latent_dim=2, hidden_units=3)), "B", 1, 5)
    assert not isinstance(step, NativeStep)
    with pytest.raises(ValueError, match="native kernels"):
        fused_step(VAE(ModelConfig(data_dim=4, latent_dim=2, hidden_units=3)), "B", 1, 5, use_native=True)


def test_without_a_compiler_it_warns_once_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("AEVB_NATIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    monkeypatch.setattr(native_build.shutil, "which", lambda name: "/bin/false" if name == "false" else None)
    with pytest.warns(RuntimeWarning, match="native kernels unavailable"):
        assert native.load() is None
    assert native.load() is None  # remembered: no second warning, no rebuild
    step = fused_step(VAE(ModelConfig(data_dim=4, latent_dim=2, hidden_units=3)), "B", 1, 5)
    assert not isinstance(step, NativeStep)
    assert step(torch.rand(5, 4).round()).isfinite()


@needs_kernels
def test_a_fresh_cache_builds_and_loads(monkeypatch, tmp_path):
    monkeypatch.setenv("AEVB_NATIVE_CACHE", str(tmp_path))
    # a build left in the real temporary directory would be found before building here
    monkeypatch.setattr(native_build.tempfile, "gettempdir", lambda: str(tmp_path / "no-such-tmp"))
    kernels = native.load()
    assert kernels is not None and kernels.path.parent == tmp_path and kernels.path.exists()
    assert list(tmp_path.iterdir()) == [kernels.path]  # no scratch files left behind
    a = torch.linspace(-3, 3, 101)
    out = torch.empty_like(a)
    magnitude = kernels.activation_forward(a, out, "tanh")
    torch.testing.assert_close(out, torch.tanh(a), rtol=4e-7, atol=1e-7)
    assert magnitude == pytest.approx(torch.tanh(a).abs().sum().item(), rel=1e-6)


@needs_kernels
def test_the_kernels_share_torchs_openmp_runtime():
    """One thread pool: the library must not bring a second OpenMP runtime into the process."""
    runtimes = native_build.openmp_runtimes()
    assert len(runtimes) <= 1, runtimes
    assert KERNELS.threads() == torch.get_num_threads()


def _mostly_zeros(rows, dim, density, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(rows, dim, generator=generator)
    return torch.where(torch.rand(rows, dim, generator=generator) < density, x, torch.zeros(()))


@needs_kernels
@pytest.mark.parametrize("rows, in_features, out_features", [(100, 784, 500), (7, 33, 5), (3, 16, 64), (1, 1, 130)])
def test_sparse_products_equal_the_dense_ones(rows, in_features, out_features):
    generator = torch.Generator().manual_seed(7)
    x = _mostly_zeros(rows, in_features, 0.15, seed=8)
    x[0, :5] = torch.tensor([1.0, 0.0, -2.5, 0.0, 1e-30])[: min(5, in_features)]
    weight = torch.randn(out_features, in_features, generator=generator)
    bias = torch.randn(out_features, generator=generator)
    grad = torch.randn(rows, out_features, generator=generator)
    sparse = SparseRows(rows, in_features, threads=torch.get_num_threads())
    magnitude = KERNELS.sparse_rows(x, sparse)
    assert magnitude == pytest.approx(x.abs().sum().item(), rel=1e-5)
    assert sparse.density() == (x != 0).sum().item() / x.numel()
    out, grad_weight = torch.empty(rows, out_features), torch.empty(out_features, in_features)
    KERNELS.sparse_linear(sparse, weight, bias, out)
    KERNELS.sparse_weight_gradient(sparse, grad, grad_weight)
    torch.testing.assert_close(
        out.double(), torch.addmm(bias.double(), x.double(), weight.double().t()), rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(grad_weight.double(), grad.double().t() @ x.double(), rtol=1e-5, atol=1e-5)


@needs_kernels
def test_sparse_products_give_the_same_bits_on_any_number_of_threads_and_never_use_more_tiles():
    x = _mostly_zeros(50, 200, 0.2, seed=9)
    weight, grad = torch.randn(300, 200), torch.randn(50, 300)
    sparse = SparseRows(50, 200, threads=2)  # tiles for two threads only
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 4):
            torch.set_num_threads(count)
            KERNELS.sparse_rows(x, sparse)
            out, grad_weight = torch.empty(50, 300), torch.empty(300, 200)
            KERNELS.sparse_linear(sparse, weight, torch.zeros(300), out)
            KERNELS.sparse_weight_gradient(sparse, grad, grad_weight)
            results.append((out, grad_weight))
    finally:
        torch.set_num_threads(threads)
    for out, grad_weight in results[1:]:
        assert torch.equal(out, results[0][0]) and torch.equal(grad_weight, results[0][1])


@needs_kernels
@pytest.mark.parametrize("estimator", ["A", "B", "IWAE"])
def test_the_step_on_mostly_zero_data_takes_the_sparse_path_and_equals_the_torch_step(estimator):
    results = []
    x = (_mostly_zeros(9, 40, 0.2, seed=10) > 0).float()
    for use_native in (False, True):
        torch.manual_seed(0)
        model = VAE(ModelConfig(data_dim=40, latent_dim=3, hidden_units=70, init_std=0.3))
        step = fused_step(model, estimator, 2, batch_size=12, use_native=use_native)
        torch.manual_seed(5)
        bound = step(x).item()
        if use_native:
            assert step.encoder[0].sparse_input is not None  # the sparse products were used
        results.append((bound, {name: p.grad.clone() for name, p in model.named_parameters()}))
    (torch_bound, torch_grads), (native_bound, native_grads) = results
    assert native_bound == pytest.approx(torch_bound, rel=1e-6)
    for name, grad in torch_grads.items():
        torch.testing.assert_close(native_grads[name], grad, rtol=1e-5, atol=2e-6 * grad.abs().max().item(), msg=name)


@needs_kernels
def test_dense_data_keep_the_dense_products():
    torch.manual_seed(0)
    model = VAE(ModelConfig(data_dim=40, latent_dim=3, hidden_units=7))
    step = fused_step(model, "B", 1, batch_size=12)
    step(torch.rand(12, 40) + 0.1)
    assert step.encoder[0].sparse_input is None and step._dense_steps == 100


@needs_kernels
def test_an_unusable_cache_builds_in_a_private_temporary_directory(monkeypatch, tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    monkeypatch.setenv("AEVB_NATIVE_CACHE", str(tmp_path / "a-file" / "cache"))  # cannot be created
    monkeypatch.setattr(native_build.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    kernels = native.load()
    assert kernels is not None and kernels.path.parent.name.startswith("aevb-native-")
    assert kernels.path.parent.stat().st_mode & 0o777 == 0o700


def test_a_directory_others_can_write_or_own_is_not_trusted_even_as_the_configured_cache(tmp_path, monkeypatch):
    """Issue 14: the configured cache gets the checks of the temporary directory: one that another
    user owns, or that anyone but us can write, could hand us their code."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    monkeypatch.setenv("AEVB_NATIVE_CACHE", str(cache))
    assert native_build.trusted(cache)
    cache.chmod(0o777)
    assert not native_build.trusted(cache)
    cache.chmod(0o770)
    assert not native_build.trusted(cache)
    cache.chmod(0o700)
    uid = os.getuid()
    monkeypatch.setattr(native_build.os, "getuid", lambda: uid + 1)  # as if another user had made it
    assert not native_build.trusted(cache)


def _planted_library(path, marker):
    """Someone else's code under aevb's file name: a library whose loading creates ``marker``."""
    source = path.with_suffix(".c")
    source.write_text(
        "#include <stdio.h>\n"
        "static void __attribute__((constructor)) planted(void) {\n"
        f'    FILE *marker = fopen("{marker}", "w");\n'
        "    if (marker) fclose(marker);\n"
        "}\n"
    )
    subprocess.run([native_build.find_compiler(), "-shared", "-fPIC", "-o", str(path), str(source)], check=True)
    source.unlink()
    return path


def _runtime_warnings(record):
    return [str(warning.message) for warning in record if issubclass(warning.category, RuntimeWarning)]


@needs_kernels
def test_a_library_planted_in_a_cache_others_can_write_is_never_loaded(tmp_path, monkeypatch):
    """Issue 14: with AEVB_NATIVE_CACHE on a world-writable directory, another user's
    ``kernels-<hash>.so`` there must not run; the kernels are built in the private directory."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    marker = tmp_path / "planted-code-ran"
    planted = _planted_library(shared / KERNELS.path.name, marker)  # the name load() looks for
    monkeypatch.setenv("AEVB_NATIVE_CACHE", str(shared))
    monkeypatch.setattr(native_build.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(native, "_loaded", {})
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        kernels = native.load()
    assert not marker.exists()
    assert kernels is not None and kernels.path.parent == tmp_path / "tmp" / f"aevb-native-{os.getuid()}"
    messages = _runtime_warnings(record)
    assert len(messages) == 1 and str(shared) in messages[0] and "others can write" in messages[0], messages
    assert list(shared.iterdir()) == [planted]  # nothing written there either


def _load_from_only(cache: Path, tmp_path: Path, monkeypatch) -> None:
    """Make ``cache`` the configured cache, with no temporary directory to fall back on and
    nothing loaded yet in this process."""
    monkeypatch.setenv("AEVB_NATIVE_CACHE", str(cache))
    monkeypatch.setattr(native_build.tempfile, "gettempdir", lambda: str(tmp_path / "no-such-tmp"))
    monkeypatch.setattr(native, "_loaded", {})


@needs_kernels
def test_a_library_file_others_can_write_is_rebuilt_not_loaded(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    marker = tmp_path / "planted-code-ran"
    planted = _planted_library(cache / KERNELS.path.name, marker)
    planted.chmod(0o777)
    _load_from_only(cache, tmp_path, monkeypatch)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        kernels = native.load()
    assert not marker.exists()
    messages = _runtime_warnings(record)
    assert len(messages) == 1 and str(planted) in messages[0], messages
    assert kernels is not None and kernels.path == planted and not planted.stat().st_mode & 0o022
    a = torch.linspace(-3, 3, 11)
    out = torch.empty_like(a)
    kernels.activation_forward(a, out, "tanh")  # the rebuilt library works
    torch.testing.assert_close(out, torch.tanh(a), rtol=4e-7, atol=1e-7)


def _system_library() -> Path | None:
    """A shared library of the system mapped into this process (libm), or None."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = Path(line.split()[-1])
                if path.name.startswith(("libm.so", "libm-")) and path.is_file():
                    return path
    except OSError:
        pass
    return None


@needs_kernels
@pytest.mark.parametrize("planted", ["another library", "not a library"])
def test_a_foreign_file_under_the_expected_name_falls_back_to_torch_with_one_warning(planted, tmp_path, monkeypatch):
    """Issue 14: a library without aevb's functions, or no library at all, under the file name of
    the kernels: one warning naming the file, then torch operations (no AttributeError, no OSError)."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    target = cache / KERNELS.path.name
    if planted == "another library":
        system = _system_library()
        if system is None:
            pytest.skip("no libm mapped into this process")
        shutil.copyfile(system, target)
    else:
        target.write_bytes(b"\x7fELF but not really")
    target.chmod(0o700)
    _load_from_only(cache, tmp_path, monkeypatch)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert native.load() is None
        assert native.load() is None  # remembered: no second warning
        step = fused_step(VAE(ModelConfig(data_dim=4, latent_dim=2, hidden_units=3)), "B", 1, 5)
    messages = _runtime_warnings(record)
    assert len(messages) == 1 and str(target) in messages[0] and "torch operations" in messages[0], messages
    assert not isinstance(step, NativeStep) and step(torch.rand(5, 4).round()).isfinite()


@needs_kernels
def test_a_nan_in_mostly_zero_data_reaches_the_output_and_the_guard():
    x = _mostly_zeros(4, 40, 0.2, seed=11)
    x[2, 17] = float("nan")
    x[1, 3] = -0.0
    sparse = SparseRows(4, 40, threads=1)
    assert math.isnan(KERNELS.sparse_rows(x, sparse))
    out = torch.empty(4, 3)
    KERNELS.sparse_linear(sparse, torch.ones(3, 40), torch.zeros(3), out)
    assert torch.isnan(out[2]).all() and torch.isfinite(out[[0, 1, 3]]).all()


@needs_kernels
@pytest.mark.parametrize(
    "optimizer_name, settings",
    [
        ("adagrad", dict(lr=0.05, weight_decay=0.01, lr_decay=0.1)),
        ("adagrad-warmup", dict(lr=0.05, weight_decay=0.01, warmup=2)),  # (2 of the 5 steps summed only)
        pytest.param("adam", dict(lr=0.01, weight_decay=0.01, betas=(0.3, 0.9)), marks=torchs_adam_rounding_known),
    ],
)
@pytest.mark.parametrize("config", [CONFIGS[5], CONFIGS[9], CONFIGS[1]], ids=str)
def test_the_optimiser_inside_equals_the_optimiser_after_bit_for_bit(one_thread, config, optimizer_name, settings):
    """Every decoder (here a per-dimension Gaussian variance, a bounded one, a deeper ReLU
    Bernoulli model) and IWAE: the same weights, sums and step counts as optimizer.step()."""
    from aevb.training.optimizers import guarded_step, non_finite

    x = torch.rand(6, 7)
    if config[0] == "bernoulli":
        x = torch.bernoulli(x)
    states = []
    for inside in (False, True):
        model = _model(config)
        step = fused_step(model, "IWAE", 2, batch_size=6)
        optimizer = _optimizer(optimizer_name, model.parameters(), **settings)
        torch.manual_seed(3)
        for _ in range(5):
            if inside:
                _step_with(step, x, optimizer)
            else:
                bound = step(x)
                guarded_step(optimizer, non_finite(step.parameters, bound, step.flat_gradient))
        states.append(([p.detach().clone() for p in model.parameters()], optimizer.state_dict()["state"]))
    (params_after, state_after), (params_inside, state_inside) = states
    assert all(torch.equal(a, b) for a, b in zip(params_after, params_inside))
    _assert_same_optimizer_state(state_inside, state_after, optimizer)


@needs_kernels
# 50, 200: lanes left over (dim % 16); 784: MNIST; 1800, 3607: lanes whose products are folded
# into logarithms mid-row (every 112 factors), then more left over
@pytest.mark.parametrize("dim", [50, 200, 784, 1800, 3607])
@pytest.mark.parametrize("scale", [1.0, 12.0])  # 12: most |logit| > 16, where 1 + e^-|a| rounds to 1
def test_evaluation_log_likelihood_with_the_bias_added_in_the_kernel(dim, scale):
    generator = torch.Generator().manual_seed(3)
    samples, points = 3, 7
    logits = torch.randn(samples * points, dim, generator=generator) * scale
    bias = torch.randn(dim, generator=generator) * scale
    x = torch.rand(points, dim, generator=generator)
    x[:4] = x[:4].round()
    expected = bernoulli_from_logits(logits.double() + bias.double()).log_prob(x.double().repeat(samples, 1))
    log_lik = torch.empty(samples * points)
    KERNELS.bernoulli_log_lik(logits, x, samples, log_lik, bias=bias)
    # float32 rounding of the logits themselves (a + b) is the error's floor: ~1e-7 relative per term
    tolerance = 2e-7 * (logits.double() + bias.double()).abs().sum(dim=1).max().item() + 1e-5
    torch.testing.assert_close(log_lik.double(), expected, rtol=0, atol=tolerance)
    without = torch.empty(samples * points)
    KERNELS.bernoulli_log_lik(logits + bias, x, samples, without)
    torch.testing.assert_close(without, log_lik, rtol=0, atol=tolerance)


@needs_kernels
@pytest.mark.parametrize("dim, where", [(100, 70), (100, 98), (2000, 5), (2000, 1999)])
def test_evaluation_log_likelihood_keeps_a_nan_in_its_row(dim, where):
    # a NaN early in a lane folded mid-row, late in a full vector, and in the elements left over
    logits, x = torch.zeros(3, dim), torch.ones(1, dim)
    logits[1, where] = math.nan
    log_lik = torch.empty(3)
    KERNELS.bernoulli_log_lik(logits, x, 3, log_lik)
    assert math.isnan(log_lik[1])
    torch.testing.assert_close(
        log_lik[[0, 2]].double(), torch.full((2,), -dim * math.log(2), dtype=torch.float64), rtol=1e-6, atol=0
    )


@needs_kernels
@pytest.mark.parametrize("activation", sorted(ACTIVATION_CODES))
def test_bias_activation_is_the_module_on_the_biased_input(activation):
    generator = torch.Generator().manual_seed(4)
    h = torch.randn(300, 70, generator=generator) * 3  # above the kernels' threading threshold
    bias = torch.randn(70, generator=generator)
    expected = ACTIVATIONS[activation]()(h.double() + bias.double())
    out = KERNELS.bias_activation(h.clone(), bias, activation)
    torch.testing.assert_close(out.double(), expected, rtol=2e-6, atol=2e-7)


@needs_kernels
def test_fast_evaluation_path_in_float32_matches_the_reference_in_float64():
    from aevb.evaluation.decoding import fast_decoder_log_prob

    torch.manual_seed(6)
    model = VAE(ModelConfig(data_dim=784, latent_dim=20, hidden_units=500, init_std=0.3))
    x = torch.bernoulli(torch.full((5, 784), 0.2))
    z = torch.randn(40, 5, 20)
    with torch.no_grad():
        fast = fast_decoder_log_prob(model, z, x)
        expected = model.double().decode(z.double()).log_prob(x.double())
    assert fast.dtype == torch.float32 and fast.shape == (40, 5)
    torch.testing.assert_close(fast.double(), expected, rtol=0, atol=2e-3)  # ~500 nats: float32 products


@needs_kernels
def test_evaluation_log_likelihood_keeps_the_terms_that_round_away_from_one_plus_e():
    # softplus(-17) = 4.1e-8 < 2^-24: 1 + e^-17 is 1 in float32; the kernel carries what rounding lost.
    logits, x = torch.full((2, 784), -17.0), torch.zeros(1, 784)
    log_lik = torch.empty(2)
    KERNELS.bernoulli_log_lik(logits, x, 2, log_lik)
    expected = -784 * math.log1p(math.exp(-17.0))
    torch.testing.assert_close(log_lik.double(), torch.full((2,), expected, dtype=torch.float64), rtol=1e-5, atol=0)


@needs_kernels
def test_evaluation_tanh_is_within_its_stated_absolute_error_everywhere():
    # aevb_bias_activation's tanh (evaluation) promises an absolute error below 1.2e-7 at every input
    # and keeps NaN and the limits at ±inf.
    a = torch.cat(
        [
            torch.linspace(-12, 12, 400_001),
            torch.logspace(-9, 0, 20_001),
            -torch.logspace(-9, 0, 20_001),
            torch.tensor([math.nan, math.inf, -math.inf]),
        ]
    )
    out = KERNELS.bias_activation(a.clone().view(1, -1), torch.zeros(a.numel()), "tanh").view(-1)
    expected = torch.tanh(a.double())
    assert (out[:-3].double() - expected[:-3]).abs().max().item() < 1.2e-7
    assert math.isnan(out[-3]) and out[-2].item() == 1.0 and out[-1].item() == -1.0


def test_a_threshold_on_a_parallel_simd_loop_leaves_its_simd_on():
    # OpenMP 5.0: an if clause without a modifier on `parallel for simd` applies to the simd part too,
    # so below the threshold (every small minibatch) the loop ran without vectors
    # (docs/performance.md). The threshold belongs to the threads alone.
    import re

    source = (Path(native.__file__).parent / "kernels.c").read_text()
    combined = [line for line in source.splitlines() if re.search(r"omp parallel for simd.*\bif\s*\(", line)]
    assert combined and all(re.search(r"\bif\s*\(\s*parallel\s*:", line) for line in combined)


@needs_kernels
@pytest.mark.parametrize("optimizer_name", ["adagrad", "adam"])
def test_the_update_is_not_applied_inside_onto_step_counts_the_kernel_cannot_write(optimizer_name):
    """The kernels count steps in a float32; an optimiser whose counts are another dtype (a state
    dict edited by hand) takes its own step()."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(data_dim=30, latent_dim=4, hidden_units=20))
    step = fused_step(model, "B", 1, 8)
    optimizer = _optimizer(optimizer_name, model.parameters(), lr=0.01)
    x = torch.rand(8, 30).round()
    _step_with(step, x, optimizer)
    assert step.applies_optimizer(optimizer)
    for state in optimizer.state.values():
        state["step"] = state["step"].double()
    optimizer.__dict__.pop("_lists", None)  # (its cached kernel lists hold the old tensors)
    assert not step.applies_optimizer(optimizer)
