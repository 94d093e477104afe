"""The VAE of §3 / App. C: structure, initialisation, decoders, checkpoint round trip."""

import dataclasses

import pytest
import torch

from aevb import VAE, AevbError, ModelConfig
from aevb.checkpoint import load_model, save_model


def test_paper_architecture_and_shapes():
    model = VAE(ModelConfig(data_dim=784, latent_dim=20, hidden_units=500))
    # One tanh hidden layer each way; encoder heads μ and log σ², decoder logits (App. C).
    assert [type(m).__name__ for m in model.encoder.net.hidden] == ["Linear", "Tanh"]
    assert model.encoder.net.heads.out_features == 40
    assert model.decoder.net.heads.out_features == 784
    expected = (784 * 500 + 500) + (500 * 40 + 40) + (20 * 500 + 500) + (500 * 784 + 784)
    assert model.num_parameters() == expected
    x = torch.rand(7, 784)
    q = model.encode(x)
    assert q.batch_shape == (7,) and q.event_shape == (20,)
    z = q.rsample((3,))
    p = model.decode(z)
    assert p.batch_shape == (3, 7) and p.event_shape == (784,)
    assert p.log_prob(x).shape == (3, 7)


def test_initialisation_is_n_0_001_with_001_the_standard_deviation_and_the_authors_zeros():
    """§5's N(0, 0.01) as the authors' code draws it (σ = 0.01), with the encoder's log σ² head and
    the decoder's output biases at zero (anglepy VAE_Z_X.py): q(z|x) starts with σ² = 1 exactly."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(data_dim=784, latent_dim=20, hidden_units=500))
    heads = model.encoder.net.heads
    zero = [heads.weight[20:], heads.bias[20:], model.decoder.net.heads.bias]
    assert all(torch.count_nonzero(p) == 0 for p in zero)
    zero_ids = {id(p) for p in (heads.bias, model.decoder.net.heads.bias)}
    random = [p.detach().reshape(-1) for p in model.parameters() if p is not heads.weight and id(p) not in zero_ids]
    values = torch.cat([*random, heads.weight[:20].detach().reshape(-1), heads.bias[:20].detach()])
    assert values.mean().abs() < 1e-4
    assert values.std().item() == pytest.approx(0.01, rel=0.01)
    q = model.encode(torch.rand(5, 784))
    assert torch.equal(q.variance, torch.ones(5, 20))
    other = VAE(ModelConfig(data_dim=784, latent_dim=20, hidden_units=500, init="normal", init_std=0.1))
    assert torch.cat([p.detach().reshape(-1) for p in other.parameters()]).std().item() == pytest.approx(0.1, rel=0.01)


def test_glorot_initialisation_and_the_output_bias_at_the_data_means_logit():
    config = ModelConfig(data_dim=784, latent_dim=50, hidden_units=(200, 200), hidden_layers=2, init="glorot")
    model = VAE(config)
    for name, parameter in model.named_parameters():
        if parameter.ndim == 1:
            assert torch.count_nonzero(parameter) == 0, name
        else:
            fan_out, fan_in = parameter.shape
            limit = (6 / (fan_in + fan_out)) ** 0.5
            assert parameter.abs().max() <= limit and parameter.abs().max() > 0.95 * limit, name
            assert parameter.var().item() == pytest.approx(limit**2 / 3, rel=0.05), name
    data = torch.rand(500, 784) * torch.linspace(0, 1, 784)  # column means 0 … 0.5
    model.initialise_from_data(data)
    expected = torch.logit(data.mean(0).clamp(1e-3, 1 - 1e-3))
    assert torch.allclose(model.decoder.net.heads.bias, expected)
    assert torch.allclose(model.decoder.mean(torch.zeros(1, 50))[0], data.mean(0).clamp(1e-3, 1 - 1e-3), atol=1e-5)
    plain = VAE(ModelConfig(data_dim=784, latent_dim=5, hidden_units=10))
    before = plain.decoder.net.heads.bias.clone()
    plain.initialise_from_data(data)  # the paper's init ignores the data
    assert torch.equal(plain.decoder.net.heads.bias, before)


def test_gaussian_decoder_with_sigmoid_mean_stays_in_unit_interval():
    torch.manual_seed(0)
    config = ModelConfig(
        data_dim=6, latent_dim=2, hidden_units=8, likelihood="gaussian", sigmoid_mean=True, init_std=3.0
    )
    model = VAE(config).double()  # float32's sigmoid rounds to exactly 1 above a logit of 17; float64's above 37
    mean = model.decoder.mean(torch.randn(100, 2, dtype=torch.float64) * 10)
    assert torch.all((mean > 0) & (mean < 1))
    z = torch.randn(4, 2, dtype=torch.float64)
    torch.testing.assert_close(model.decode(z).mean, model.decoder.mean(z))


def test_no_hidden_layer_is_a_linear_model():
    model = VAE(ModelConfig(data_dim=3, latent_dim=2, hidden_layers=0, likelihood="gaussian"))
    z1, z2 = torch.randn(2), torch.randn(2)
    mean = model.decoder.mean
    torch.testing.assert_close(mean(z1 + z2) + mean(torch.zeros(2)), mean(z1) + mean(z2))


@pytest.mark.parametrize(
    "bad",
    [
        dict(latent_dim=0),
        dict(hidden_units=-1),
        dict(activation="swish"),
        dict(likelihood="poisson"),
        dict(init_std=0.0),
        dict(hidden_layers=-1),
    ],
)
def test_bad_configuration_is_a_user_error(bad):
    with pytest.raises(AevbError):
        ModelConfig(data_dim=4, **bad)


def test_checkpoint_round_trip_is_exact_and_pickle_free(tmp_path):
    torch.manual_seed(0)
    model = VAE(ModelConfig(data_dim=6, latent_dim=2, hidden_units=5, image_shape=(2, 3)))
    save_model(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
    loaded = load_model(tmp_path)
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert b"pickle" not in (tmp_path / "model.safetensors").read_bytes()[:200]


def test_checkpoint_with_wrong_shapes_is_refused(tmp_path):
    save_model(VAE(ModelConfig(data_dim=6, latent_dim=2, hidden_units=5)), tmp_path)
    config = (tmp_path / "model.json").read_text().replace('"latent_dim": 2', '"latent_dim": 3')
    (tmp_path / "model.json").write_text(config)
    with pytest.raises(AevbError, match="does not match"):
        load_model(tmp_path)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_the_authors_init_starts_q_at_unit_variance_and_the_decoder_at_its_middle(likelihood, architecture):
    """init "anglepy" (anglepy's DLVM / VAE_Z_X, 2014): N(0, init_std²) everywhere but the encoder's
    log σ² head and the decoder's output biases, which are zero: σ²(x) = 1 for every x, and the
    decoder's output depends on z only through its weights."""
    config = ModelConfig(
        data_dim=36,
        latent_dim=3,
        hidden_units=8,
        likelihood=likelihood,
        init="anglepy",
        init_std=0.01,
        image_shape=(6, 6),
        architecture=architecture,
        conv_channels=(2,),
    )
    torch.manual_seed(0)
    model = VAE(config)
    mean, log_variance = model.encoder.moments(torch.rand(5, 36))
    assert torch.equal(log_variance, torch.zeros(5, 3)) and mean.abs().max() > 0
    assert torch.equal(model.decoder.net.heads.bias, torch.zeros_like(model.decoder.net.heads.bias))
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    spread = torch.cat([w.flatten() for w in weights if w.abs().sum() > 0]).std().item()
    assert 0.008 < spread < 0.012  # the rest from N(0, 0.01²)
    normal = VAE(dataclasses.replace(config, init="normal"))
    assert normal.encoder.moments(torch.rand(5, 36))[1].abs().max() > 0  # (the plain §5 init does not)
