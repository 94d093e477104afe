"""Deeper and convolutional networks (aevb.models.networks) and the conditional VAE (aevb.models.conditional):
geometry against hand-written convolutions, gradients against finite differences, the
conditional bound and log p(x|y) against the exact values of a linear-Gaussian model, exact
resume, and the command line end to end."""

from __future__ import annotations

import copy
import itertools
import math
import random

import numpy as np
import pytest
import torch
from test_cli import assert_usage_error, is_png, run_cli
from torch.distributions import MultivariateNormal
from torch.func import functional_call

from aevb import VAE, ModelConfig
from aevb.engines.fused import FusedStep, unsupported_reason
from aevb.errors import AevbError
from aevb.evaluation.importance_sampling import estimate_log_likelihood
from aevb.models.build import build_model
from aevb.models.conditional import ConditionalVAE, conditioned_rows
from aevb.models.networks import ConvDecoderNet, ConvEncoderNet
from aevb.objectives.estimators import estimator_a, estimator_b, get_estimator
from aevb.training import AEVB, TrainConfig, Trainer, evaluation_data


def _rows(model: torch.nn.Module, count: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """Random datapoints for ``model``: binary x, with one-hot labels appended when conditional."""
    config = model.config
    x = torch.bernoulli(torch.full((count, config.data_dim), 0.4, dtype=dtype), generator=generator)
    if config.num_classes is None:
        return x
    labels = torch.randint(config.num_classes, (count,), generator=generator)
    return conditioned_rows(x, labels, config.num_classes)


SHAPE_CASES = [  # (image shape, channels, dense widths, classes, likelihood)
    ((28, 28), (4, 8), (6,), None, "bernoulli"),
    ((28, 20), (4, 8), (), None, "gaussian"),
    ((5, 7), (3, 2, 2), (4, 3), 3, "bernoulli"),
    ((5, 7), (2,), (), 4, "gaussian"),
    ((3, 5, 7), (2, 3), (4,), 3, "gaussian"),  # RGB images, conditional
    ((3, 6, 4), (3,), (), None, "bernoulli"),
]


@pytest.mark.parametrize("shape, channels, widths, classes, likelihood", SHAPE_CASES)
def test_conv_model_handles_leading_sample_dimensions_like_single_rows(shape, channels, widths, classes, likelihood):
    torch.manual_seed(0)
    config = ModelConfig(
        data_dim=math.prod(shape),
        latent_dim=3,
        hidden_units=widths or 5,
        hidden_layers=len(widths),
        architecture="conv",
        image_shape=shape,
        conv_channels=channels,
        num_classes=classes,
        likelihood=likelihood,
        init_std=0.3,
    )
    model = build_model(config)
    rows = _rows(model, 4, torch.Generator().manual_seed(1))
    posterior = model.encode(rows)
    assert posterior.batch_shape == (4,) and posterior.event_shape == (3,)
    z = torch.randn(2, 5, 4, 3)  # (L1, L2, M, J): two leading sample dimensions
    log_p = model.decoder_log_prob(z, rows) if classes else model.decode(z).log_prob(rows)
    assert log_p.shape == (2, 5, 4)
    # Every (sample, point) pair is decoded on its own: the same number as a single row.
    for a, b, m in [(0, 0, 0), (1, 4, 3), (0, 2, 1)]:
        single = z[a, b, m][None]
        alone = (
            model.decoder_log_prob(single, rows[m][None]) if classes else model.decode(single).log_prob(rows[m][None])
        )
        torch.testing.assert_close(log_p[a, b, m], alone[0], rtol=1e-5, atol=1e-4)
    stacked = rows.expand(3, 4, rows.shape[1])  # the encoder too: (3, M, D [+ C]) → batch (3, M)
    torch.testing.assert_close(model.encode(stacked).mean[2], posterior.mean)
    bound = estimator_b(model, rows, num_samples=2)
    assert bound.shape == (4,) and torch.isfinite(bound).all()
    assert model.sample(6).shape == (6, config.data_dim) and model.reconstruct(rows).shape == (4, config.data_dim)


def _conv2d_reference(image, weight, bias, stride=2, padding=1):
    """Cross-correlation by loops: out[o, i, j] = b[o] + Σ_{c,u,v} w[o, c, u, v] · x_pad[c, s·i + u, s·j + v]."""
    channels, height, width = image.shape
    padded = torch.zeros(channels, height + 2 * padding, width + 2 * padding, dtype=image.dtype)
    padded[:, padding : padding + height, padding : padding + width] = image
    kernel = weight.shape[-1]
    out_h, out_w = (height + 2 * padding - kernel) // stride + 1, (width + 2 * padding - kernel) // stride + 1
    out = torch.zeros(weight.shape[0], out_h, out_w, dtype=image.dtype)
    for o, i, j in itertools.product(range(weight.shape[0]), range(out_h), range(out_w)):
        patch = padded[:, stride * i : stride * i + kernel, stride * j : stride * j + kernel]
        out[o, i, j] = bias[o] + (weight[o] * patch).sum()
    return out


def _conv_transpose_reference(maps, weight, bias, out_shape, stride=2, padding=1):
    """Transposed convolution by scattering: input pixel (i, j) of channel c adds w[c, o, u, v]·x to
    output pixel (s·i − p + u, s·j − p + v), kept when it lies inside ``out_shape``."""
    out = bias[:, None, None].expand(weight.shape[1], *out_shape).clone()
    channels, height, width = maps.shape
    kernel = weight.shape[-1]
    for c, i, j, u, v in itertools.product(range(channels), range(height), range(width), range(kernel), range(kernel)):
        y, x = stride * i - padding + u, stride * j - padding + v
        if 0 <= y < out_shape[0] and 0 <= x < out_shape[1]:
            out[:, y, x] += weight[c, :, u, v] * maps[c, i, j]
    return out


@pytest.mark.parametrize("shape", [(4, 3), (5, 6)])
def test_conv_networks_match_hand_written_convolutions(shape):
    torch.manual_seed(2)
    pixels = shape[0] * shape[1]
    tanh = torch.nn.Tanh
    encoder = ConvEncoderNet(shape, (2, 3), 1, (), tanh, (2, 2)).double()
    decoder = ConvDecoderNet(2, shape, (2, 3), (), tanh, (pixels, pixels)).double()
    for parameter in itertools.chain(encoder.parameters(), decoder.parameters()):
        torch.nn.init.normal_(parameter, 0.0, 0.5)

    x = torch.rand(pixels + 1, dtype=torch.float64)  # D pixels and one extra column (a label)
    first, second = encoder.hidden.convolutions[0], encoder.hidden.convolutions[2]
    maps = torch.tanh(_conv2d_reference(x[:pixels].view(1, *shape), first.weight, first.bias))
    maps = torch.tanh(_conv2d_reference(maps, second.weight, second.bias))
    assert maps.shape == (3, math.ceil(math.ceil(shape[0] / 2) / 2), math.ceil(math.ceil(shape[1] / 2) / 2))
    features = torch.cat([maps.flatten(), x[pixels:]])
    expected = encoder.heads.weight @ features + encoder.heads.bias
    got = torch.cat(encoder(x[None]), dim=-1)[0]
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)

    z = torch.randn(2, dtype=torch.float64)
    dense, transposed = decoder.hidden[0], decoder.hidden[3]
    smallest = torch.tanh(dense.weight @ z + dense.bias).view(decoder.map_shape)  # (3, ⌈⌈H/2⌉/2⌉, ...)
    middle_shape = (math.ceil(shape[0] / 2), math.ceil(shape[1] / 2))
    middle = torch.tanh(_conv_transpose_reference(smallest, transposed.weight, transposed.bias, middle_shape))
    out = _conv_transpose_reference(middle, decoder.heads.weight, decoder.heads.bias, shape)  # (2 heads, H, W)
    mean, log_var = decoder(z[None])
    torch.testing.assert_close(mean[0], out[0].flatten(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_var[0], out[1].flatten(), rtol=1e-12, atol=1e-12)


class _Bound(torch.nn.Module):
    """The summed bound with fixed ε as a module's forward, so functional_call can vary the weights."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, rows, noise):
        return estimator_b(self.model, rows, noise.shape[0], noise=noise).sum()


@pytest.mark.parametrize(
    "architecture, classes, likelihood", [("conv", None, "bernoulli"), ("conv", 3, "gaussian"), ("mlp", 3, "bernoulli")]
)
def test_gradient_of_the_bound_matches_finite_differences(architecture, classes, likelihood):
    torch.manual_seed(3)
    config = ModelConfig(
        data_dim=12,
        latent_dim=2,
        hidden_units=(3,),
        hidden_layers=1,
        architecture=architecture,
        image_shape=(4, 3),
        conv_channels=(2,),
        num_classes=classes,
        likelihood=likelihood,
        activation="softplus",
        init_std=0.4,
        log_variance_bound=5.0,
    )
    model = build_model(config).double()
    rows = _rows(model, 3, torch.Generator().manual_seed(4), dtype=torch.float64)
    noise = torch.randn(2, 3, 2, dtype=torch.float64)
    wrapper = _Bound(model)
    names = [name for name, _ in wrapper.named_parameters()]

    def total(*parameters):
        return functional_call(wrapper, dict(zip(names, parameters)), (rows, noise))

    parameters = tuple(p.detach().clone().requires_grad_(True) for p in wrapper.parameters())
    assert torch.autograd.gradcheck(total, parameters, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_conditional_networks_use_the_label_and_reduce_to_the_unconditional_model_without_it():
    torch.manual_seed(5)
    base = dict(data_dim=6, latent_dim=2, hidden_units=4, init_std=0.5)
    conditional = ConditionalVAE(ModelConfig(**base, num_classes=3))
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    labels = torch.tensor([0, 1, 2, 0, 1])
    rows, other = conditioned_rows(x, labels, 3), conditioned_rows(x, (labels + 1) % 3, 3)
    z = torch.randn(4, 5, 2)
    # y enters both networks: another label, another q(z|x,y) and another p(x|z,y).
    assert not torch.allclose(conditional.encode(rows).mean, conditional.encode(other).mean)
    changed = conditional.decoder_log_prob(z, rows) - conditional.decoder_log_prob(z, other)
    assert changed.abs().min() > 1e-4
    # With the weights of the one-hot inputs zeroed it is the unconditional VAE with the other weights.
    plain = VAE(ModelConfig(**base))
    with torch.no_grad():
        for network, inputs in ((conditional.encoder.net, 6), (conditional.decoder.net, 2)):
            network.hidden[0].weight[:, inputs:] = 0
        for (name, value), (_, target) in zip(conditional.named_parameters(), plain.named_parameters()):
            target.copy_(value[:, : target.shape[1]] if value.shape != target.shape else value)
    noise = torch.randn(3, 5, 2)
    torch.testing.assert_close(estimator_a(conditional, rows, 3, noise=noise), estimator_a(plain, x, 3, noise=noise))
    torch.testing.assert_close(conditional.decoder_log_prob(z, rows), plain.decode(z).log_prob(x))
    grid = conditional.class_grid(4, generator=torch.Generator().manual_seed(0)).view(3, 4, 6)
    assert torch.equal(grid[0], grid[1]) and torch.equal(grid[0], grid[2])  # same z per column, y unused
    assert not torch.equal(grid[0, 0], grid[0, 1])  # another column, another z


def test_class_grid_shares_z_down_each_column():
    torch.manual_seed(6)
    model = ConditionalVAE(ModelConfig(data_dim=6, latent_dim=2, hidden_units=4, num_classes=3, init_std=0.5))
    grid = model.class_grid(5, generator=torch.Generator().manual_seed(1))
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    for label in range(3):
        expected = model.mean(z, torch.full((5,), label))
        torch.testing.assert_close(grid[5 * label : 5 * label + 5], expected)
    assert not torch.allclose(grid[:5], grid[5:10])


def _linear_gaussian_cvae(seed: int = 7) -> ConditionalVAE:
    """A conditional factor analyser: no hidden layer, per-dimension variance. Its decoder is
    x = W z + V e_y + b + noise, so log p(x|y) = log N(x; b + V e_y, W Wᵀ + diag ψ) exactly."""
    torch.manual_seed(seed)
    config = ModelConfig(
        data_dim=4,
        latent_dim=2,
        hidden_layers=0,
        likelihood="gaussian",
        decoder_variance="per-dimension",
        num_classes=3,
        init_std=0.6,
    )
    model = ConditionalVAE(config).double()
    with torch.no_grad():
        model.decoder.log_var.uniform_(-1.0, 0.0)
    return model


def test_conditional_bound_and_importance_sampling_are_of_log_p_x_given_y():
    model = _linear_gaussian_cvae()
    weights, bias = model.decoder.net.heads.weight, model.decoder.net.heads.bias
    W, V = weights[:, :2], weights[:, 2:]
    covariance = W @ W.T + torch.diag(model.decoder.log_var.exp())
    generator = torch.Generator().manual_seed(8)
    labels = torch.tensor([0, 1, 2, 2, 0, 1])
    x = torch.randn(6, 4, generator=generator, dtype=torch.float64) + V.T.detach()[labels]
    rows = conditioned_rows(x, labels, 3)
    with torch.no_grad():
        exact = MultivariateNormal(bias + V.T[labels], covariance).log_prob(x)  # (6,)
    torch.manual_seed(9)
    estimate = estimate_log_likelihood(model, rows, num_samples=20_000)
    errors = torch.as_tensor(estimate.per_datapoint_stderr)
    assert torch.all((torch.as_tensor(estimate.per_datapoint) - exact).abs() < 5 * errors + 1e-3)
    with torch.no_grad():
        bound = estimator_b(model, rows, 4000)
    assert torch.all(bound < exact)  # the bound lies below log p(x|y) (the encoder is not the posterior)
    # Another label gives another, still exact, log p(x|y'): the estimate follows the label.
    other = conditioned_rows(x, (labels + 1) % 3, 3)
    with torch.no_grad():
        exact_other = MultivariateNormal(bias + V.T[(labels + 1) % 3], covariance).log_prob(x)
    estimate_other = estimate_log_likelihood(model, other, num_samples=20_000)
    assert (exact - exact_other).abs().max() > 0.5
    assert torch.all(
        (torch.as_tensor(estimate_other.per_datapoint) - exact_other).abs()
        < 5 * torch.as_tensor(estimate_other.per_datapoint_stderr) + 1e-3
    )


def test_dynamic_binarisation_keeps_the_labels_exact():
    x = torch.rand(50, 9)
    labels = torch.arange(50) % 4
    rows = conditioned_rows(x, labels, 4)
    assert torch.equal(evaluation_data(rows, "dynamic")[:, 9:], rows[:, 9:])
    model = ConditionalVAE(ModelConfig(data_dim=9, latent_dim=2, hidden_units=3, num_classes=4))
    trainer = Trainer(model, rows, TrainConfig(batch_size=50, max_samples=100, binarize="dynamic"))
    for _ in range(3):
        indices, drawn = trainer._load(torch.randperm(50))
        assert torch.equal(drawn[:, 9:], rows[indices, 9:])
        assert set(drawn[:, :9].unique().tolist()) <= {0.0, 1.0}


def _train(model_config, data, config, **fit_options):
    model = build_model(model_config)
    result = Trainer(model, data, config).fit(**fit_options)
    return model, result


@pytest.mark.parametrize(
    "model_options",
    [
        dict(architecture="conv", image_shape=(4, 4), conv_channels=(2, 3), hidden_units=5),
        dict(num_classes=3, hidden_units=(6, 4), hidden_layers=2),
        dict(num_classes=3, architecture="conv", image_shape=(4, 4), conv_channels=(2,), hidden_units=4),
    ],
)
def test_resuming_conv_and_conditional_runs_reproduces_the_uninterrupted_run(model_options):
    torch.manual_seed(0)
    model_config = ModelConfig(data_dim=16, latent_dim=3, **model_options)
    x = torch.rand(130, 16)
    data = x if model_config.num_classes is None else conditioned_rows(x, torch.arange(130) % 3, 3)
    config = TrainConfig(
        batch_size=20,
        max_samples=900,
        selection_steps=6,
        first_eval=200,
        evals_per_decade=4,
        seed=4,
        binarize="dynamic",
        step_size_candidates=(0.01, 0.1),
    )
    reference, expected = _train(model_config, data, config)
    checkpoints = []
    _train(
        model_config,
        data,
        config,
        checkpoint_every=5,
        on_checkpoint=lambda state: checkpoints.append(copy.deepcopy(state)),
    )
    assert len(checkpoints) > 6
    for state in random.Random(1).sample(checkpoints, 3) + [checkpoints[0]]:
        model, result = _train(model_config, data, config, resume=state)
        for name, value in reference.state_dict().items():
            assert torch.equal(model.state_dict()[name], value), (state.samples, name)
        assert [m.train_bound for m in result.history] == [m.train_bound for m in expected.history]


def test_fused_engine_reports_conv_and_conditional_models_and_auto_falls_back():
    conv = build_model(ModelConfig(data_dim=16, latent_dim=2, architecture="conv", image_shape=(4, 4)))
    conditional = build_model(ModelConfig(data_dim=16, latent_dim=2, num_classes=3))
    assert "conv" in unsupported_reason(conv, "B")
    assert "conditional" in unsupported_reason(conditional, "B")
    for model in (conv, conditional):
        automatic = AEVB("B", 1, "auto")
        automatic.setup(model, torch.rand(4, 16))
        assert automatic.engine.name == "autograd"
        with pytest.raises(AevbError, match="cannot train this model"):
            AEVB("B", 1, "fused").setup(model, torch.rand(4, 16))


@pytest.mark.parametrize("widths", [(6, 4), (5, 7, 3)])
def test_fused_step_trains_deeper_mlps_with_per_layer_widths_like_autograd(widths):
    torch.manual_seed(0)
    model = VAE(
        ModelConfig(data_dim=7, latent_dim=3, hidden_units=widths, hidden_layers=len(widths), init_std=0.5)
    ).double()
    assert unsupported_reason(model, "B") is None
    assert [layer.out_features for layer in model.encoder.net.hidden if isinstance(layer, torch.nn.Linear)] == list(
        widths
    )
    assert [layer.out_features for layer in model.decoder.net.hidden if isinstance(layer, torch.nn.Linear)] == list(
        reversed(widths)
    )
    x = torch.bernoulli(torch.rand(6, 7, dtype=torch.float64))
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    expected = get_estimator("B")(model, x, 2)
    (-expected.mean()).backward()
    expected_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    step = FusedStep(model, "B", 2, 6)
    torch.manual_seed(5)
    assert step(x).item() == pytest.approx(expected.sum().item(), rel=1e-10)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, rtol=1e-9, atol=1e-11)


def test_model_configuration_errors_are_one_line():
    with pytest.raises(AevbError, match="needs image data"):
        ModelConfig(data_dim=10, architecture="conv")
    with pytest.raises(AevbError, match="2 widths for 1 hidden layers"):
        ModelConfig(data_dim=10, hidden_units=(3, 4), hidden_layers=1)
    with pytest.raises(AevbError, match="unknown architecture"):
        ModelConfig(data_dim=10, architecture="transformer")
    with pytest.raises(AevbError, match="at least 2 classes"):
        ModelConfig(data_dim=10, num_classes=1)
    with pytest.raises(AevbError, match="labels must lie in 0..2"):
        conditioned_rows(torch.rand(2, 3), torch.tensor([0, 3]), 3)
    # An old model.json (no architecture, channels or classes) still builds the same MLP VAE.
    old = ModelConfig.from_dict({"data_dim": 12, "latent_dim": 2, "hidden_units": 5, "hidden_layers": 1})
    assert type(build_model(old)) is VAE and old.architecture == "mlp" and old.num_classes is None


TINY = [
    "--optimizer",  # (moves from the first step: the defaults' 100-step warm-up is most of this run)
    "adagrad",
    "--latent-dim",
    "3",
    "--max-samples",
    "2000",
    "--selection-steps",
    "4",
    "--eval-subset",
    "200",
    "--threads",
    "1",
    "--no-progress",
]


def test_cli_conv_run_trains_evaluates_and_samples(tmp_path, capsys):
    args = ["train", *TINY, "--architecture", "conv", "--conv-channels", "4,8", "--hidden-units", "16"]
    code, out, err = run_cli(capsys, [*args, "--out", tmp_path / "conv"])
    assert code == 0, err
    run = tmp_path / "conv"
    import json

    config = json.loads((run / "config.json").read_text())["model"]
    assert config["architecture"] == "conv" and config["conv_channels"] == [4, 8]
    code, out, err = run_cli(capsys, ["evaluate", run, "--nll", "--k", "20", "--num-points", "30", "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert (
        result["log_likelihood"] < 0
        and result["test_bound"] < result["log_likelihood"] + 3 * result["test_bound_stderr"]
    )
    code, out, err = run_cli(capsys, ["sample", run, "--num", "12"])
    assert code == 0 and is_png(run / "samples-seed0.png")
    assert_usage_error(*run_cli(capsys, ["sample", run, "--label", "3"]))
    assert_usage_error(*run_cli(capsys, [*args, "--engine", "fused", "--out", tmp_path / "fused"]))


def test_cli_conditional_run_trains_evaluates_and_draws_class_conditional_samples(tmp_path, capsys):
    import json

    run = tmp_path / "cond"
    code, out, err = run_cli(
        capsys, ["train", *TINY, "--conditional", "--hidden-units", "16", "--binarize", "dynamic", "--out", run]
    )
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["model"]["num_classes"] == 10
    assert is_png(run / "samples.png") and is_png(run / "reconstructions.png")
    code, out, err = run_cli(capsys, ["evaluate", run, "--nll", "--k", "20", "--num-points", "30", "--json"])
    assert code == 0, err
    assert math.isfinite(json.loads(out)["log_likelihood"])
    code, out, err = run_cli(capsys, ["sample", run, "--num", "20", "--out", tmp_path / "grid.npy"])
    grid = np.load(tmp_path / "grid.npy")
    assert code == 0 and grid.shape == (20, 784)  # 10 classes × 2 columns
    code, out, err = run_cli(capsys, ["sample", run, "--num", "7", "--label", "4", "--out", tmp_path / "four.npy"])
    assert code == 0 and np.load(tmp_path / "four.npy").shape == (7, 784)
    from aevb.checkpoint import load_model

    model = load_model(run)  # the grid: row c is class c, column j the j-th z of the seeded generator
    z = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    expected = torch.cat([model.mean(z, torch.full((2,), label)) for label in range(10)])
    torch.testing.assert_close(torch.from_numpy(grid), expected)
    assert_usage_error(*run_cli(capsys, ["sample", run, "--label", "10"]))
    assert_usage_error(*run_cli(capsys, ["evaluate", run, "--hmc"]))
    assert_usage_error(
        *run_cli(capsys, ["train", *TINY, "--conditional", "--algorithm", "wake-sleep", "--out", tmp_path / "ws"])
    )


def test_cli_refuses_conditional_and_conv_on_data_without_labels_or_image_shape(tmp_path, capsys):
    data = tmp_path / "flat.npy"
    np.save(data, np.random.default_rng(0).random((60, 10)).astype(np.float32))
    common = ["train", "--dataset", data, *TINY]
    assert_usage_error(*run_cli(capsys, [*common, "--conditional", "--out", tmp_path / "a"]))
    assert_usage_error(*run_cli(capsys, [*common, "--architecture", "conv", "--out", tmp_path / "b"]))
    assert_usage_error(
        *run_cli(capsys, [*common, "--hidden-units", "4,5", "--hidden-layers", "3", "--out", tmp_path / "c"])
    )


def test_two_processes_train_the_conditional_conv_model_one_process_trains(tmp_path):
    from test_distributed import SETTINGS, _parameters, _torchrun

    from aevb.cli import main

    # Labels travel in the rows: each process's shard carries its own; M = 15 splits 8 + 7.
    options = [
        *SETTINGS,
        "--conditional",
        "--architecture",
        "conv",
        "--conv-channels",
        "2,4",
        "--binarize",
        "dynamic",
        "--batch-size",
        "15",
        "--max-samples",
        "600",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", *options, "--out", str(one)]) == 0
    _torchrun([*options, "--out", str(two)], tmp_path)
    expected, got = _parameters(one), _parameters(two)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-4, atol=2e-5, msg=name)


def test_cli_deeper_mlp_with_per_layer_widths_trains_fused_and_evaluates(tmp_path, capsys):
    import json

    run = tmp_path / "deep"
    code, out, err = run_cli(capsys, ["train", *TINY, "--hidden-units", "12,8,6", "--engine", "fused", "--out", run])
    assert code == 0, err
    model = json.loads((run / "model.json").read_text())["model"]
    assert model["hidden_units"] == [12, 8, 6] and model["hidden_layers"] == 3
    code, out, err = run_cli(capsys, ["evaluate", run, "--nll", "--k", "20", "--num-points", "30", "--json"])
    assert code == 0, err
    assert json.loads(out)["log_likelihood"] < 0


def test_importance_sampling_memory_budget_counts_hidden_layers_and_feature_maps():
    from aevb.evaluation.importance_sampling import rows_within_budget

    budget = 8 * 10_000
    mlp = VAE(ModelConfig(data_dim=10, latent_dim=2, hidden_units=(30, 20), hidden_layers=2))
    assert rows_within_budget(mlp, 10, budget) == budget // (8 * (4 * 10 + 2 * 50 + 4 * 2))
    conv = build_model(
        ModelConfig(
            data_dim=16, latent_dim=2, hidden_layers=0, architecture="conv", image_shape=(4, 4), conv_channels=(3, 5)
        )
    )
    maps = 3 * 2 * 2 + 5 * 1 * 1  # 4×4 → 2×2 → 1×1
    assert rows_within_budget(conv, 16, budget) == budget // (8 * (4 * 16 + 2 * maps + 4 * 2))
