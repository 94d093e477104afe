"""The Python API keeps the CLI's promise: a bad argument is one AevbError line that names the
setting, raised before any work, never a ZeroDivisionError or a shape error from deep inside torch."""

from __future__ import annotations

import pytest
import torch

from aevb import VAE, ModelConfig, TrainConfig, Trainer, estimator_a, estimator_b, evaluate_bound
from aevb.errors import AevbError
from aevb.evaluation.hmc_estimator import hmc_log_likelihood
from aevb.evaluation.importance_sampling import estimate_log_likelihood
from aevb.models.conditional import ConditionalVAE
from aevb.objectives.estimators import iwae_bound, minibatch_bound

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VAE(ModelConfig(data_dim=10, latent_dim=3, hidden_units=8))


X = torch.rand(6, 10)
TRAIN = TrainConfig(max_samples=100, step_size=0.01)

CALLS = {
    "bound, L = 0": (lambda m: evaluate_bound(m, X, num_samples=0), "`num_samples`"),
    "bound, L = -1": (lambda m: evaluate_bound(m, X, num_samples=-1), "`num_samples`"),
    "bound, L = 2.5": (lambda m: evaluate_bound(m, X, num_samples=2.5), "`num_samples`"),
    "bound, batch 0": (lambda m: evaluate_bound(m, X, batch_size=0), "`batch_size`"),
    "bound, wrong width": (
        lambda m: evaluate_bound(m, torch.rand(6, 12)),
        "12 columns, but the model takes rows of 10",
    ),
    "bound, no rows": (lambda m: evaluate_bound(m, torch.rand(0, 10)), "non-empty"),
    "bound, a vector": (lambda m: evaluate_bound(m, torch.rand(10)), "non-empty (N, D)"),
    "bound, a list": (lambda m: evaluate_bound(m, X.tolist()), "torch.Tensor"),
    "estimator A, L = 0": (lambda m: estimator_a(m, X, 0), "`num_samples`"),
    "estimator B, L = 0": (lambda m: estimator_b(m, X, 0), "`num_samples`"),
    "IWAE, k = 0": (lambda m: iwae_bound(m, X, 0), "`num_samples`"),
    "IS, k = 0": (lambda m: estimate_log_likelihood(m, X, num_samples=0), "`num_samples`"),
    "IS, k = -3": (lambda m: estimate_log_likelihood(m, X, num_samples=-3), "`num_samples`"),
    "IS, max rows 0": (lambda m: estimate_log_likelihood(m, X, num_samples=5, max_rows=0), "`max_rows`"),
    "IS, wrong width": (lambda m: estimate_log_likelihood(m, torch.rand(6, 3), num_samples=5), "3 columns"),
    "HMC, L = 0": (lambda m: hmc_log_likelihood(m, X, num_samples=0), "`num_samples`"),
    "HMC, leapfrog 0": (lambda m: hmc_log_likelihood(m, X, leapfrog_steps=0), "`leapfrog_steps`"),
    "HMC, wrong width": (lambda m: hmc_log_likelihood(m, torch.rand(6, 3)), "3 columns"),
    "minibatch, N < 1": (lambda m: minibatch_bound(torch.ones(4), -5), "`dataset_size`"),
    "sample, -1": (lambda m: m.sample(-1), "`num_samples`"),
    "trainer, wrong width": (lambda m: Trainer(m, torch.rand(50, 12), TRAIN), "`train` has 12 columns"),
    "trainer, valid width": (lambda m: Trainer(m, torch.rand(50, 10), TRAIN, valid=torch.rand(5, 9)), "`valid` has 9"),
    "trainer, values > 1": (
        lambda m: Trainer(m, 3 * torch.rand(50, 10), TRAIN),
        "Bernoulli decoder needs values in [0, 1]",
    ),
    "trainer, NaN": (
        lambda m: Trainer(m, torch.full((50, 10), float("nan")), TRAIN),
        "`train` holds NaN or infinite values",
    ),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_a_bad_argument_is_one_line_naming_the_setting(model, name):
    call, words = CALLS[name]
    with pytest.raises(AevbError) as error:
        call(model)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_a_gaussian_decoder_refuses_non_finite_data_but_takes_any_real_values():
    frey = VAE(ModelConfig(data_dim=4, latent_dim=2, hidden_units=5, likelihood="gaussian"))
    Trainer(frey, 3 * torch.randn(20, 4), TRAIN)
    with pytest.raises(AevbError, match="`test` holds NaN or infinite values"):
        Trainer(frey, torch.rand(20, 4), TRAIN, test=torch.tensor([[0.0, float("inf"), 0.0, 0.0]]))


@pytest.mark.parametrize(
    "values,words",
    [
        (dict(latent_dim=2.5), "`latent_dim`"),
        (dict(data_dim=0), "`data_dim`"),
        (dict(hidden_units=(8, 0)), "`hidden_units`"),
        (dict(hidden_layers=-1), "`hidden_layers`"),
        (dict(hidden_units=(8, 4), hidden_layers=1), "2 widths for 1 hidden"),
    ],
)
def test_model_config_refuses_what_would_fail_later(values, words):
    with pytest.raises(AevbError, match=words):
        ModelConfig(**{"data_dim": 10, **values})


def test_model_config_takes_one_hidden_layer_per_width_listed():
    config = ModelConfig(data_dim=10, hidden_units=(8, 4))
    assert config.hidden_layers == 2
    assert [layer.out_features for layer in VAE(config).encoder.net.hidden if hasattr(layer, "out_features")] == [8, 4]
    assert ModelConfig(data_dim=10).hidden_layers == 1
    assert ModelConfig(data_dim=10, hidden_units=4, hidden_layers=3).hidden_layers == 3
    assert ModelConfig(data_dim=10, latent_dim=5.0).latent_dim == 5  # a whole float, as 1e4 on a command line


def test_the_bound_defaults_to_the_models_estimator():
    """Cauchy q against a Student-t prior has no closed-form KL: the model trains and evaluates with
    estimator A, and evaluate_bound does too unless told otherwise."""
    cauchy = VAE(ModelConfig(data_dim=10, latent_dim=3, hidden_units=8, posterior="cauchy", prior="student-t"))
    assert cauchy.default_estimator == "A"
    torch.manual_seed(3)
    default = evaluate_bound(cauchy, X, num_samples=4)
    torch.manual_seed(3)
    named = evaluate_bound(cauchy, X, num_samples=4, estimator="A")
    assert default == named
    with pytest.raises(AevbError, match="estimator B needs KL"):
        evaluate_bound(cauchy, X, estimator="B")


def test_a_conditional_model_takes_rows_with_their_labels():
    conditional = ConditionalVAE(ModelConfig(data_dim=10, latent_dim=3, hidden_units=8, num_classes=4))
    assert conditional.input_width == 14
    rows = torch.cat([X, torch.nn.functional.one_hot(torch.arange(6) % 4, 4).float()], dim=1)
    assert evaluate_bound(conditional, rows).num_datapoints == 6
    with pytest.raises(AevbError, match="10 columns, but the model takes rows of 14"):
        evaluate_bound(conditional, X)


def test_whole_float_counts_are_taken_as_integers(model):
    """1e4 on a command line is a float: the library takes a whole one wherever it takes a count."""
    estimate, _ = hmc_log_likelihood(
        model, X[:2], num_samples=8.0, leapfrog_steps=2.0, burn_in=2.0, gap=1.0, batch_size=2.0
    )
    assert estimate.per_datapoint.shape == (2,)
    assert evaluate_bound(model, X, num_samples=2.0, batch_size=4.0).num_samples == 2
