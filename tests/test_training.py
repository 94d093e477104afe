"""Algorithm 1 with the §5 procedure: MAP scaling, step-size choice, determinism, progress."""

import pytest
import torch

from aevb import VAE, AevbError, ModelConfig, TrainConfig, Trainer, estimator_b
from aevb.data import load_dataset
from aevb.training import evaluation_data, evaluation_points
from aevb.training.algorithms import make_algorithm


@pytest.fixture(scope="module")
def sample_data():
    return load_dataset("mnist-sample")


def tiny_model(data_dim=784, hidden=32, latent=4):
    return VAE(ModelConfig(data_dim=data_dim, latent_dim=latent, hidden_units=hidden))


def test_evaluation_points_are_log_spaced_and_end_at_the_total():
    points = evaluation_points(total=1_000_000, first=10_000, per_decade=4)
    assert points[0] == 10_000 and points[-1] == 1_000_000
    assert points == sorted(set(points))
    assert len(points) == 9  # 10^4 .. 10^6 at 4 per decade
    assert evaluation_points(total=500, first=10_000, per_decade=4) == [500]


def test_weight_decay_is_the_n01_prior_scaled_by_the_dataset_size():
    torch.manual_seed(0)
    data = torch.rand(250, 12)
    model = VAE(ModelConfig(data_dim=12, latent_dim=2, hidden_units=6, init_std=0.3))
    config = TrainConfig(max_samples=100, step_size=0.01, batch_size=50, prior_precision=2.0)
    trainer = Trainer(model, data, config)
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = trainer._optimizer(0.01)
    x = data[:50]
    torch.manual_seed(5)
    trainer._step(optimizer, torch.arange(50))
    # By hand: d/dθ of −(1/M) Σ 𝓛̃ + (λ / 2N) ‖θ‖², with the same ε.
    reference = VAE(model.config)
    with torch.no_grad():
        for target, value in zip(reference.parameters(), start):
            target.copy_(value)
    torch.manual_seed(5)
    loss = -estimator_b(reference, x, 1).mean()
    loss = loss + 2.0 / (2 * 250) * sum(p.square().sum() for p in reference.parameters())
    loss.backward()
    for parameter, ref in zip(model.parameters(), reference.parameters()):
        # Adagrad's accumulator after one step is the square of the gradient it was given.
        torch.testing.assert_close(optimizer.state[parameter]["sum"], ref.grad.square(), rtol=1e-4, atol=1e-10)


def test_short_run_on_real_data_improves_the_bound(sample_data):
    torch.manual_seed(0)
    model = tiny_model(hidden=64, latent=8)
    config = TrainConfig(max_samples=40_000, step_size=0.02, first_eval=2_000, evals_per_decade=2, eval_subset=1000)
    result = Trainer(model, sample_data.train, config, valid=sample_data.valid).fit()
    first, last = result.history[0], result.history[-1]
    assert last.samples == 40_000
    assert last.valid_bound > first.valid_bound + 15  # nats per datapoint
    assert last.train_bound > -210
    assert [m.samples for m in result.history] == sorted(m.samples for m in result.history)


def test_same_seed_same_run_and_other_seed_other_run(sample_data):
    def run(seed):
        model = tiny_model(hidden=16)
        config = TrainConfig(max_samples=3_000, seed=seed, step_size=0.02, eval_subset=200)
        Trainer(model, sample_data.train[:2000], config).fit()
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_step_size_selection_keeps_the_best_candidate_and_trains_at_it(sample_data):
    config = TrainConfig(
        max_samples=6_000,
        step_size_candidates=(1e-5, 0.02, 1e5),
        selection_steps=10,
        eval_subset=200,
        optimizer="adagrad",  # (moves from the first step: a 10-step trial would be all warm-up)
    )
    result = Trainer(tiny_model(hidden=16), sample_data.train[:3000], config).fit()
    assert result.step_size == 0.02
    assert [t.step_size for t in result.step_size_trials] == [1e-5, 0.02, 1e5]
    bounds = {t.step_size: t.mean_bound for t in result.step_size_trials}
    assert bounds[0.02] == max(bounds.values())
    assert result.history[0].steps > 10 and result.history[-1].samples == 6_000


def test_training_stops_after_the_given_epochs(sample_data):
    data = sample_data.train[:1000]
    config = TrainConfig(epochs=2.5, step_size=0.02, eval_subset=100)
    result = Trainer(tiny_model(hidden=8), data, config).fit()
    assert result.history[-1].samples == 2500 and result.history[-1].epoch == pytest.approx(2.5)


def test_dynamic_binarisation_draws_fresh_binary_images(sample_data):
    config = TrainConfig(max_samples=1000, binarize="dynamic", step_size=0.02)
    trainer = Trainer(tiny_model(hidden=8), sample_data.train[:500], config)
    batch = trainer._data_order().next()
    indices, first = trainer._load(batch)
    assert set(first.unique().tolist()) <= {0.0, 1.0} and indices.shape == (100,)
    # Fresh draws: the same minibatch binarised again differs, and x ~ Bernoulli(grey level).
    draws = torch.stack([trainer._load(batch)[1] for _ in range(400)])
    assert not torch.equal(draws[0], draws[1])
    grey = sample_data.train[:500][batch]
    assert (draws.mean(0) - grey).abs().max() < 5 * 0.5 / 400**0.5
    fixed = evaluation_data(sample_data.valid, "dynamic")
    assert torch.equal(fixed, evaluation_data(sample_data.valid, "dynamic"))  # one fixed draw
    assert set(fixed.unique().tolist()) == {0.0, 1.0}
    assert evaluation_data(sample_data.valid, "none") is sample_data.valid


@pytest.mark.parametrize(
    "bad",
    [
        dict(max_samples=0),
        dict(max_samples=10, batch_size=0),
        dict(max_samples=10, optimizer="sgd"),
        dict(max_samples=10, estimator="C"),
        dict(max_samples=10, step_size=float("nan")),
        dict(max_samples=10, prior_precision=-1.0),
        dict(epochs=-1.0),
    ],
)
def test_bad_training_settings_are_user_errors(bad):
    with pytest.raises(AevbError):
        TrainConfig(**bad)


def test_a_run_that_names_no_stopping_point_trains_the_librarys_default_budget():
    from aevb.training import DEFAULT_MAX_SAMPLES

    assert TrainConfig().max_samples == DEFAULT_MAX_SAMPLES and TrainConfig(epochs=2).max_samples is None


def test_training_stops_exactly_at_a_sample_count_off_the_batch_grid(sample_data):
    config = TrainConfig(max_samples=2_550, step_size=0.02, eval_subset=100)
    result = Trainer(tiny_model(hidden=8), sample_data.train[:1000], config).fit()
    assert result.history[-1].samples == 2_550 and result.history[-1].steps == 26


def test_iwae_schedule_runs_each_stage_for_its_share_of_the_samples(sample_data, monkeypatch):
    # 3280 steps of 10 samples: stage i of Burda et al.'s schedule is 3^i steps at 1e-3 · 10^(−i/7).
    config = TrainConfig(
        max_samples=3280 * 10,
        batch_size=10,
        optimizer="adam",
        step_size=1e-3,
        schedule="iwae",
        optimizer_eps=5e-6,
        eval_subset=10,
        evals_per_decade=1,
    )
    trainer = Trainer(tiny_model(hidden=4), sample_data.train[:100], config)
    step_sizes = []

    def record(optimizer, batch):
        assert optimizer.param_groups[0]["eps"] == 5e-6
        step_sizes.append(optimizer.param_groups[0]["lr"])
        return torch.zeros(())

    monkeypatch.setattr(trainer, "_step", record)
    history = trainer.fit().history
    expected = [1e-3 * 10 ** (-i / 7) for i in range(8) for _ in range(3**i)]
    assert step_sizes == pytest.approx(expected, rel=1e-12)
    assert history[-1].step_size == pytest.approx(1e-4)  # metrics record the scheduled step size


@pytest.mark.parametrize("bad", [dict(schedule="cosine"), dict(optimizer_eps=0.0), dict(optimizer_eps=float("inf"))])
def test_bad_schedule_and_optimizer_eps_are_user_errors(bad):
    with pytest.raises(AevbError):
        TrainConfig(max_samples=10, **bad)


def test_a_run_that_chose_its_step_size_ends_where_a_run_given_the_winner_ends(sample_data):
    """§5's selection costs the candidates' trials only: the run then starts again from where the
    trials started, so it is the run given the winner, bit for bit."""

    def run(**settings):
        model = tiny_model(hidden=16)
        config = TrainConfig(
            max_samples=4_000, seed=5, eval_subset=200, selection_steps=10, optimizer="adagrad", **settings
        )
        result = Trainer(model, sample_data.train[:2000], config, threads=1).fit()
        return result, torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    chosen, chosen_parameters = run(step_size_candidates=(1e-5, 0.02, 1e5))
    given, given_parameters = run(step_size=0.02)
    assert chosen.step_size == given.step_size == 0.02
    assert torch.equal(chosen_parameters, given_parameters)
    assert [m.samples for m in chosen.history] == [m.samples for m in given.history]


def test_step_size_selection_restarts_every_candidate_from_the_same_state():
    """Every candidate starts from the same weights, random stream and minibatches; the highest
    mean bound over the scored last iterations wins; the model and the random stream are put back
    where the trials started (the run starts again there)."""
    from aevb.training import DataOrder, select_step_size

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1, bias=False)
    start_weight, start_rng = model.weight.detach().clone(), torch.get_rng_state()
    firsts = {}

    def step(optimizer, batch):  # loss ‖w‖²: SGD at 0.5 reaches 0 at once, 0.1 shrinks, 2.0 diverges
        lr = optimizer.param_groups[0]["lr"]
        firsts.setdefault(lr, (model.weight.detach().clone(), batch.clone(), torch.rand(2)))
        optimizer.zero_grad()
        loss = (model.weight**2).sum()
        loss.backward()
        optimizer.step()
        return -loss.detach() * len(batch)

    choice = select_step_size(
        model,
        (0.1, 0.5, 2.0),
        4,
        lambda lr: torch.optim.SGD(model.parameters(), lr=lr),
        lambda: DataOrder(50, 10, torch.device("cpu")),
        step,
    )
    assert list(firsts) == [0.1, 0.5, 2.0]
    start = firsts[0.1]
    assert all(torch.equal(a, b) for first in firsts.values() for a, b in zip(first, start))
    assert [t.step_size for t in choice.trials] == [0.1, 0.5, 2.0]
    assert choice.step_size == 0.5 and choice.trials[1].mean_bound == 0.0
    assert choice.trials[2].mean_bound < choice.trials[0].mean_bound < 0
    assert torch.equal(model.weight.detach(), start_weight) and torch.equal(torch.get_rng_state(), start_rng)


def test_step_size_selection_scores_the_last_iterations_and_stops_a_diverged_candidate():
    """The score is the mean bound of the last ``scored_steps`` iterations, not of the whole trial;
    a candidate that falls below the untrained model by as much again stops at its next check."""
    from aevb.training import DataOrder, select_step_size
    from aevb.training.step_size import DIVERGENCE_CHECK_STEPS

    model = torch.nn.Linear(1, 1, bias=False)
    calls = {}

    def step(optimizer, batch):
        lr = optimizer.param_groups[0]["lr"]
        calls[lr] = calls.get(lr, 0) + 1
        t = calls[lr]
        if lr == 1.0:  # behind at first, ahead at the end
            bound = -10.0 if t <= 3 * DIVERGENCE_CHECK_STEPS // 2 else -1.0
        elif lr == 2.0:  # ahead at first, behind at the end
            bound = -2.0 if t <= 3 * DIVERGENCE_CHECK_STEPS // 2 else -3.0
        else:  # diverges
            bound = -1e9
        return torch.tensor(bound * len(batch))

    steps = 2 * DIVERGENCE_CHECK_STEPS
    choice = select_step_size(
        model,
        (1.0, 2.0, 3.0),
        steps,
        lambda lr: torch.optim.SGD(model.parameters(), lr=lr),
        lambda: DataOrder(50, 10, torch.device("cpu")),
        step,
        scored_steps=10,
        untrained_bound=-20.0,
    )
    assert choice.step_size == 1.0  # (its second half's mean would lose: -5.5 against -2.5)
    assert [t.mean_bound for t in choice.trials] == [-1.0, -3.0, float("-inf")]
    assert calls == {1.0: steps, 2.0: steps, 3.0: DIVERGENCE_CHECK_STEPS}


def test_the_selection_trial_is_twenty_passes_at_least_200_minibatches_and_at_most_half_the_run():
    """§5's "first few iterations" as passes through the training set (aevb.training.step_size)."""
    from aevb.training.step_size import fit_to_budget, selection_fits_any_budget, trial_steps

    mnist = TrainConfig(max_samples=10**7)
    assert trial_steps(mnist, 50_000) == 20 * 500  # 10⁶ samples
    assert trial_steps(TrainConfig(max_samples=10**7), 1565) == 313  # Frey Face: 20 passes of 15.65 minibatches
    assert trial_steps(TrainConfig(max_samples=10**7), 500) == 200  # the floor: the warm-up's 100 and 100 more
    assert trial_steps(TrainConfig(max_samples=10**6), 50_000) == 5000  # half of a 10⁶-sample run
    assert trial_steps(TrainConfig(max_samples=10**7, selection_steps=7), 50_000) == 7  # given
    fitted = fit_to_budget(mnist, 50_000, make_algorithm("aevb", mnist))
    assert fitted.selection_steps == 10_000 and fit_to_budget(fitted, 50_000, make_algorithm("aevb", mnist)) == fitted
    assert selection_fits_any_budget(fitted, 50_000)  # extended, the run would choose the same way
    short = fit_to_budget(TrainConfig(max_samples=10**6), 50_000, make_algorithm("aevb", mnist))
    assert not selection_fits_any_budget(short, 50_000)  # cut to half the run: a longer run chooses longer


def test_a_run_written_before_minibatches_existed_is_read_as_shuffled():
    """config.json files of earlier aevb lack `minibatches`; their runs walked epochs of a permutation,
    and resume, evaluate and compare read them so. A partial configuration of the user's gets the default."""
    values = TrainConfig(max_samples=1000).to_dict()
    del values["minibatches"]
    assert TrainConfig.from_run(values).minibatches == "shuffled"
    assert TrainConfig.from_dict(values).minibatches == "with-replacement"
    assert TrainConfig.from_run({**values, "minibatches": "with-replacement"}).minibatches == "with-replacement"


def test_minibatches_drawn_with_replacement_are_whole_and_uniform():
    from aevb.training import DataOrder

    torch.manual_seed(0)
    order = DataOrder(7, 5, torch.device("cpu"), replacement=True)
    batches = [order.next() for _ in range(4000)]
    assert all(b.shape == (5,) and b.dtype == torch.int64 for b in batches)
    counts = torch.bincount(torch.cat(batches), minlength=7).double()
    assert counts.sum() == 20_000 and (counts / counts.sum() - 1 / 7).abs().max() < 0.01  # 6σ ≈ 0.015
    assert any(len(set(b.tolist())) < 5 for b in batches)  # (a row can come twice into one minibatch)
