"""Trackers get, at each evaluation point, the sample and reconstruction grids of the model at that
point, and the run's hyperparameters (issue 30, item 6); drawing the grids leaves training as it is."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import aevb
from aevb.figures import tile_images
from aevb.runs import ModelSpec, RunOptions, RunSpec, load_data, train_run
from aevb.runs import loggers as tracker_registry
from aevb.runs.layout import read_run_config
from aevb.runs.loggers import LOGGED, hyperparameters
from aevb.runs.tracker_images import (
    COLUMNS,
    SAMPLE_COUNT,
    SAMPLE_SEED,
    image_grid,
    interleave_rows,
)
from aevb.training import TrainConfig, TrainingWarning

# Timing fields differ between any two runs; everything else in metrics.jsonl is computed.
TIMINGS = ("seconds", "samples_per_second")


def _spec(loggers=()) -> RunSpec:
    return RunSpec(
        model=ModelSpec(latent_dim=2, hidden_units=8),
        # (torch's Adagrad moves from the first step: the defaults' 100-step warm-up is most of this run)
        training=TrainConfig(max_samples=2000, selection_steps=4, eval_subset=100, first_eval=500, optimizer="adagrad"),
        run=RunOptions(progress=False, loggers=loggers, threads=1),
    )


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


class Recording(tracker_registry.MetricsLogger):
    """A tracker that takes images and keeps what it was given (in the class: one run at a time)."""

    name, package, extra = "recording", "json", "json"
    takes_images = True
    events: list = []

    def __init__(self, run_dir, config):
        Recording.events = []

    def log(self, metrics):
        self.events.append(("log", metrics.samples))

    def log_images(self, images, samples):
        self.events.append(("images", samples, {key: image.copy() for key, image in images.items()}))

    def close(self, completed=True):
        self.events.append(("close", completed))


@pytest.fixture
def recording(monkeypatch):
    monkeypatch.setitem(tracker_registry.LOGGERS, "recording", Recording)
    return Recording


def test_image_grid_is_the_figures_tiling_in_8_bit_levels_grey_and_colour():
    generator = torch.Generator().manual_seed(0)
    colour = torch.rand(5, 3, 3, 4, generator=generator)  # (N, C, H, W): rows flattened channels first
    grid = image_grid(colour.reshape(5, -1), (3, 3, 4), columns=2)
    assert grid.shape == (3 * 4 - 1, 2 * 5 - 1, 3) and grid.dtype == np.uint8
    for index in range(5):
        row, column = divmod(index, 2)
        cell = grid[row * 4 : row * 4 + 3, column * 5 : column * 5 + 4]
        assert np.array_equal(cell, np.round(colour[index].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    assert (grid[3, :] == 255).all() and (grid[:, 4] == 255).all()  # the padding
    assert (grid[8:, 5:] == 255).all()  # the sixth cell has no image
    grey = torch.rand(7, 28 * 20, generator=generator)
    figure_canvas = tile_images(grey, (28, 20), columns=3)  # the run figures' layout
    grey_grid = image_grid(grey, (28, 20), columns=3)
    assert grey_grid.shape[-1] == 1 and np.array_equal(
        grey_grid[..., 0], np.round(figure_canvas * 255).astype(np.uint8)
    )


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return train_run(_spec(), tmp_path_factory.mktemp("plain") / "r")


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """The plain run's settings with the recording tracker (and TensorBoard, when installed);
    returns the run and what the recording tracker got."""
    import importlib.util

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(tracker_registry.LOGGERS, "recording", Recording)
        names = ("recording", "tensorboard") if importlib.util.find_spec("tensorboard") else ("recording",)
        run = train_run(_spec(names), tmp_path_factory.mktemp("tracked") / "r")
    return run, list(Recording.events)


def test_trackers_get_both_grids_once_per_evaluation_point_after_its_metrics(tracked_run):
    run, events = tracked_run
    points = [line["samples"] for line in _metrics(run)]
    assert [event[:2] for event in events] == [
        *[(kind, samples) for samples in points for kind in ("log", "images")],
        ("close", True),
    ]
    side = COLUMNS * 29 - 1  # ten 28×28 images a row, 1 pixel apart; ten rows (100 samples; 50 pairs)
    for _, _, images in events[1:-1:2]:
        assert {key: image.shape for key, image in images.items()} == {
            "samples": (side, side, 1),
            "reconstructions": (side, side, 1),
        }
    first, last = events[1][2], events[-2][2]
    assert not np.array_equal(first["samples"], last["samples"])  # the model changed in between


def test_the_grids_are_the_models_samples_and_reconstructions(tracked_run):
    run, events = tracked_run
    model = aevb.load(run, device="cpu")  # the model at the last evaluation point
    images = events[-2][2]
    generator = torch.Generator().manual_seed(SAMPLE_SEED)
    samples = model.sample(SAMPLE_COUNT, generator)
    assert np.abs(images["samples"].astype(int) - image_grid(samples, (28, 28), COLUMNS)).max() <= 1
    inputs = load_data(_spec().data).valid[:50]
    pairs = interleave_rows(inputs, model.reconstruct(inputs), COLUMNS)
    expected = image_grid(pairs, (28, 28), COLUMNS)
    assert np.abs(images["reconstructions"].astype(int) - expected).max() <= 1


def test_a_tracker_with_images_leaves_training_as_it_is(plain_run, tracked_run):
    # The grids come from their own generator: the run's random stream, and so every metric and
    # weight, is the same with or without trackers.
    run, _ = tracked_run

    def untimed(path):
        return [{key: value for key, value in line.items() if key not in TIMINGS} for line in _metrics(path)]

    assert untimed(run) == untimed(plain_run) and len(untimed(run)) >= 3
    tracked, plain = load_file(run / "model.safetensors"), load_file(plain_run / "model.safetensors")
    assert tracked.keys() == plain.keys() and all(torch.equal(tracked[key], plain[key]) for key in plain)


def test_tensorboard_gets_images_and_hyperparameters(tracked_run):
    pytest.importorskip("tensorboard")
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run, events = tracked_run
    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    points = [line["samples"] for line in _metrics(run)]
    assert sorted(accumulator.Tags()["images"]) == ["reconstructions", "samples"]
    for key in ("samples", "reconstructions"):
        written = accumulator.Images(key)
        assert [event.step for event in written] == points
        decoded = np.asarray(Image.open(io.BytesIO(written[-1].encoded_image_string)))
        # TensorBoard stores grey as RGB with equal channels: the grid the trackers were given.
        assert decoded.shape == (*events[-2][2][key].shape[:2], 3)
        assert all(np.array_equal(decoded[..., channel], events[-2][2][key][..., 0]) for channel in range(3))

    content = accumulator.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    written = {
        key: value.string_value if value.HasField("string_value") else value.number_value
        for key, value in start.session_start_info.hparams.items()
    }
    expected = hyperparameters(read_run_config(run))
    assert written == expected and written["model.latent_dim"] == 2 and written["training.max_samples"] == 2000
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [metric.name.tag for metric in experiment.metric_infos] == list(LOGGED)
    assert {info.name for info in experiment.hparam_infos} == set(expected)
    # The HPARAMS tab's metric columns are these scalars' last values: the final metrics.
    final = _metrics(run)[-1]
    assert accumulator.Scalars("valid_bound")[-1].value == pytest.approx(final["valid_bound"])
    end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"]).session_end_info
    assert end.status == 1  # STATUS_SUCCESS


def test_data_that_are_not_images_give_no_images_said_once(recording, tmp_path):
    data = dataclasses.replace(load_data(_spec().data), image_shape=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = train_run(_spec(("recording",)), tmp_path / "r", data=data)
    said = [str(warning.message) for warning in caught if issubclass(warning.category, TrainingWarning)]
    assert [line for line in said if "images" in line] == [
        "no images for the trackers (recording): the data are not images (no image_shape)"
    ]
    assert [event for event in recording.events if event[0] == "images"] == []
    assert [event[1] for event in recording.events[:-1]] == [line["samples"] for line in _metrics(run)]


class FakeWandb(types.ModuleType):
    """wandb's API as the tracker uses it (wandb.init → run.log / run.finish, wandb.Image)."""

    def __init__(self):
        super().__init__("wandb")
        self.calls = []
        self.Image = lambda data: ("Image", np.asarray(data))

    def init(self, **settings):
        self.calls.append(("init", settings))
        calls = self.calls
        return types.SimpleNamespace(
            log=lambda values, step: calls.append(("log", values, step)),
            finish=lambda exit_code: calls.append(("finish", exit_code)),
        )


class FakeMlflow(types.ModuleType):
    """MLflow's fluent API as the tracker uses it (a new experiment in a local store)."""

    def __init__(self):
        super().__init__("mlflow")
        self.calls = []
        for name in ("set_tracking_uri", "log_params", "log_metrics"):
            setattr(self, name, lambda *args, _name=name, **kwargs: self.calls.append((_name, args, kwargs)))
        self.get_experiment_by_name = lambda name: None
        self.create_experiment = lambda name, artifact_location: "1"
        self.start_run = lambda **kwargs: self.calls.append(("start_run", (), kwargs))

    def end_run(self, status):
        self.calls.append(("end_run", (), {"status": status}))

    def log_image(self, image, *, key, step):
        self.calls.append(("log_image", (np.asarray(image),), {"key": key, "step": step}))


def test_wandb_and_mlflow_get_the_images_and_hyperparameters(monkeypatch, tmp_path):
    wandb, mlflow = FakeWandb(), FakeMlflow()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    run = train_run(_spec(("wandb", "mlflow")), tmp_path / "r")
    config, points = read_run_config(run), [line["samples"] for line in _metrics(run)]

    assert wandb.calls[0][1]["config"] == config and wandb.calls[-1] == ("finish", 0)
    logged = wandb.calls[1:-1]
    assert [step for _, _, step in logged] == [samples for samples in points for _ in range(2)]
    for _, values, _ in logged[1::2]:  # each point: its metrics, then its two grids as grey planes
        assert sorted(values) == ["reconstructions", "samples"]
        assert all(kind == "Image" and image.shape == (289, 289) for kind, image in values.values())

    by_name = {}
    for name, args, kwargs in mlflow.calls:
        by_name.setdefault(name, []).append((args, kwargs))
    assert by_name["log_params"][0][0][0] == {key: str(value) for key, value in hyperparameters(config).items()}
    images = [(kwargs["key"], kwargs["step"], args[0].shape) for args, kwargs in by_name["log_image"]]
    assert images == [(key, samples, (289, 289)) for samples in points for key in ("samples", "reconstructions")]
    assert [kwargs["step"] for _, kwargs in by_name["log_metrics"]] == points
    assert by_name["end_run"] == [((), {"status": "FINISHED"})]


def test_colour_images_give_colour_grids_with_each_input_above_its_reconstruction():
    # Rows of channels-first colour images (C, H, W), as the data keep them: the grids are RGB.
    from aevb.models.build import build_model
    from aevb.models.config import ModelConfig
    from aevb.runs.tracker_images import TrackerImages

    torch.manual_seed(0)
    model = build_model(ModelConfig(data_dim=3 * 4 * 5, latent_dim=2, hidden_units=8))
    valid = torch.rand(7, 3 * 4 * 5)
    data = types.SimpleNamespace(image_shape=(3, 4, 5), valid=valid, valid_labels=None)
    state = torch.get_rng_state()
    grids = TrackerImages(model, data, binarize="none")()
    assert torch.equal(torch.get_rng_state(), state)  # the global random stream is untouched
    assert grids["samples"].shape == (10 * 5 - 1, 10 * 6 - 1, 3)
    # 7 inputs in a row of 10 cells, their 7 reconstructions in the row below
    assert grids["reconstructions"].shape == (2 * 5 - 1, 10 * 6 - 1, 3)
    first_input = np.round(valid[0].reshape(3, 4, 5).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert np.array_equal(grids["reconstructions"][:4, :5], first_input)
    first_output = model.reconstruct(valid[:1]).reshape(3, 4, 5).permute(1, 2, 0).numpy()
    assert np.abs(grids["reconstructions"][5:9, :5].astype(int) - np.round(first_output * 255)).max() <= 1
    assert not np.array_equal(grids["samples"][..., 0], grids["samples"][..., 1])  # colour, not grey


def test_a_conditional_model_gets_a_row_of_samples_per_class():
    from aevb.models.build import build_model
    from aevb.models.config import ModelConfig
    from aevb.runs.tracker_images import TrackerImages

    torch.manual_seed(0)
    model = build_model(ModelConfig(data_dim=6, latent_dim=2, hidden_units=8, num_classes=3, image_shape=(2, 3)))
    data = types.SimpleNamespace(image_shape=(2, 3), valid=torch.rand(4, 6), valid_labels=torch.tensor([0, 1, 2, 0]))
    samples = TrackerImages(model, data, binarize="none")()["samples"]
    expected = model.class_grid(COLUMNS, generator=torch.Generator().manual_seed(SAMPLE_SEED))
    assert samples.shape == (3 * 3 - 1, COLUMNS * 4 - 1, 1)
    assert np.abs(samples.astype(int) - image_grid(expected, (2, 3), COLUMNS)).max() <= 1


def test_a_run_that_does_not_complete_is_not_reported_as_completed(recording, tmp_path):
    import importlib.util

    class Stop(Exception):
        pass

    def stop_at_the_first_point(metrics):
        raise Stop

    names = ("recording", "tensorboard") if importlib.util.find_spec("tensorboard") else ("recording",)
    with pytest.raises(Stop):
        train_run(_spec(names), tmp_path / "r", on_metrics=stop_at_the_first_point)
    assert recording.events[-1] == ("close", False)
    if "tensorboard" in names:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        accumulator = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
        accumulator.Reload()
        tags = set(accumulator.PluginTagToContent("hparams"))
        assert tags == {"_hparams_/experiment", "_hparams_/session_start_info"}  # no end: not a success


def test_samples_of_a_non_gaussian_prior_reseed_no_device_generator(monkeypatch):
    # Drawn during training (a tracker's grid at every point), they must leave a GPU's random
    # stream as it is, as they leave the CPU's: torch.manual_seed would reseed every device.
    from aevb.models.config import ModelConfig
    from aevb.models.vae import VAE

    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    model = VAE(ModelConfig(data_dim=6, latent_dim=3, hidden_units=4, posterior="laplace", prior="laplace"))
    state = torch.get_rng_state()
    first = model.sample(5, torch.Generator().manual_seed(SAMPLE_SEED))
    again = model.sample(5, torch.Generator().manual_seed(SAMPLE_SEED))
    assert torch.equal(first, again) and torch.equal(torch.get_rng_state(), state) and reseeded == []
