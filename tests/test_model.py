"""The VAE of §3 / App. C: structure, initialisation, decoders, checkpoint round trip."""

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


def test_initialisation_is_n_0_001():
    torch.manual_seed(0)
    model = VAE(ModelConfig(data_dim=784, latent_dim=20, hidden_units=500))
    values = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert values.mean().abs() < 1e-4
    assert values.std().item() == pytest.approx(0.01, rel=0.01)


def test_gaussian_decoder_with_sigmoid_mean_stays_in_unit_interval():
    config = ModelConfig(data_dim=6, latent_dim=2, hidden_units=8, likelihood="gaussian", sigmoid_mean=True,
                         init_std=3.0)
    model = VAE(config)
    mean = model.decoder.mean(torch.randn(100, 2) * 10)
    assert torch.all((mean > 0) & (mean < 1))
    z = torch.randn(4, 2)
    torch.testing.assert_close(model.decode(z).mean, model.decoder.mean(z))


def test_no_hidden_layer_is_a_linear_model():
    model = VAE(ModelConfig(data_dim=3, latent_dim=2, hidden_layers=0, likelihood="gaussian"))
    z1, z2 = torch.randn(2), torch.randn(2)
    mean = model.decoder.mean
    torch.testing.assert_close(mean(z1 + z2) + mean(torch.zeros(2)), mean(z1) + mean(z2))


@pytest.mark.parametrize("bad", [dict(latent_dim=0), dict(hidden_units=-1), dict(activation="swish"),
                                 dict(likelihood="poisson"), dict(init_std=0.0), dict(hidden_layers=-1)])
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
