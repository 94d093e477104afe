"""Sizes that cannot fit in memory are refused up front in one line; what can be streamed is.

Issue 14, item 5: ``--samples 1e9`` for one point, ``--num 1e9``, IWAE with 10⁶ samples per
datapoint, ``--hidden-units 1e10``, ``--latent-dim 1e9`` and labels of 10¹² grew to the machine's
whole memory or died in the allocator with a traceback; item 8: an image shape that does not
match the data was accepted until ``sample`` failed. The refusals are checked in-process through
:func:`aevb.cli.main` with sizes far beyond any machine (petabytes or terabytes), so they hold
wherever the tests run; the streaming is checked by counting the rows each pass evaluates and by
comparing streamed with unstreamed numbers drawn from the same random stream.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from aevb.cli import main
from aevb.errors import AevbError

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = [
    "--hidden-units",
    "20",
    "--latent-dim",
    "2",
    "--max-samples",
    "2000",
    "--no-progress",
    "--eval-subset",
    "100",
    "--threads",
    "1",
    "--step-size",
    "0.01",
]


def run_cli(capsys, argv) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, *words: str) -> str:
    """Exit status 2, one line on stderr, no traceback, naming ``words``; returns the line."""
    assert code == 2, (code, out, err)
    assert "Traceback" not in err + out
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("aevb "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, one_thread) -> Path:
    run = tmp_path_factory.mktemp("runs") / "small"
    assert main(["train", *SMALL, "--out", str(run)]) == 0
    return run


# ------------------------------------------------------------------------- memory and sizes


def test_sizes_are_written_for_people_at_any_magnitude():
    from aevb.memory import format_bytes, format_count

    assert format_bytes(512) == "512 bytes"
    assert format_bytes(1500) == "1.5 kB"
    assert format_bytes(120 * 10**9) == "120 GB"
    assert format_bytes(62_734 * 10**9) == "62.7 TB"
    assert format_bytes(999_600) == "1.00 MB"  # not "1e+3 kB"
    assert format_bytes(4 * 10**33) == "4.00e+33 bytes"
    assert format_bytes(10**400) == "1.00e+400 bytes"  # beyond what a float holds
    assert format_count(10**10) == "10000000000" and format_count(10**30) == "1.00e+30"
    assert format_count(1234567, separators=True) == "1,234,567"


def test_available_memory_is_a_positive_number_of_bytes():
    from aevb.memory import available_memory

    available = available_memory()
    assert isinstance(available, int) and 0 < available < 2**60


def test_require_memory_refuses_in_one_line_saying_what_needs_how_much(monkeypatch):
    from aevb import memory

    monkeypatch.setattr(memory, "available_memory", lambda device=None: 120 * 10**9)
    memory.require_memory(120 * 10**9, "a thing")  # exactly what is there: fine
    with pytest.raises(AevbError) as refused:
        memory.require_memory(62_734 * 10**9, "a model with hidden-units 10000000000", advice="choose smaller sizes")
    assert str(refused.value) == (
        "a model with hidden-units 10000000000 needs at least 62.7 TB, more than the "
        "120 GB of memory available; choose smaller sizes"
    )
    monkeypatch.setattr(memory, "available_memory", lambda device=None: None)  # unknown: nothing refused
    memory.require_memory(10**30, "a thing")


# ------------------------------------------------------------------------------ model sizes


MODEL_CASES = [
    dict(data_dim=12, latent_dim=3),
    dict(data_dim=12, latent_dim=3, hidden_units=(5, 7), hidden_layers=2),
    dict(data_dim=12, latent_dim=3, hidden_units=4, hidden_layers=3, likelihood="gaussian"),
    dict(data_dim=12, latent_dim=3, hidden_layers=0),
    dict(data_dim=12, latent_dim=3, likelihood="gaussian", decoder_variance="per-dimension"),
    dict(data_dim=12, latent_dim=3, num_classes=4),
    dict(
        data_dim=12, latent_dim=3, likelihood="gaussian", decoder_variance="per-dimension", decoder_posterior="gaussian"
    ),
    dict(data_dim=12, latent_dim=3, posterior="logistic", prior="logistic"),
    dict(
        data_dim=12,
        latent_dim=3,
        architecture="conv",
        image_shape=(4, 3),
        conv_channels=(2, 5),
        hidden_units=(3,),
        num_classes=3,
    ),
    dict(
        data_dim=35,
        latent_dim=3,
        architecture="conv",
        image_shape=(5, 7),
        conv_channels=(3, 2, 2),
        hidden_units=(4, 3),
        hidden_layers=2,
        likelihood="gaussian",
    ),
    dict(data_dim=35, latent_dim=3, architecture="conv", image_shape=(5, 7), conv_channels=(3,), hidden_layers=0),
]


@pytest.mark.parametrize("options", MODEL_CASES)
def test_parameter_count_from_the_config_is_that_of_the_built_model(options):
    from aevb.models.build import build_model
    from aevb.models.buildable import parameter_count
    from aevb.models.vae import ModelConfig

    config = ModelConfig(**options)
    assert parameter_count(config) == build_model(config).num_parameters()


@pytest.mark.parametrize(
    "options, setting",
    [
        (dict(hidden_units=10**10), "`hidden_units` 10000000000"),
        (dict(latent_dim=10**9), "`latent_dim` 1000000000"),
        (dict(hidden_layers=10**9), "`hidden_layers` 1000000000"),  # hung for hours building layers
        (dict(latent_dim=10**30), "`latent_dim` 1.00e+30"),  # C++ frames from torch
        (
            dict(hidden_units=(10**9, 5), hidden_layers=2, architecture="conv", image_shape=(28, 28)),
            "`hidden_units` 1000000000,5",
        ),
    ],
)
def test_a_model_too_large_for_memory_is_refused_before_anything_is_allocated(options, setting):
    """The configuration checks only its own fields; building the model (however it is built)
    and the run's preflight (check_buildable) refuse it, at once and in one line."""
    from aevb.models.build import build_model, check_buildable
    from aevb.models.vae import VAE, ModelConfig

    config = ModelConfig(data_dim=784, **options)
    for build in (check_buildable, build_model, VAE):
        started = time.perf_counter()
        with pytest.raises(AevbError, match="needs at least .* more than the .* of memory available") as refused:
            build(config)
        assert time.perf_counter() - started < 1.0
        assert setting in str(refused.value) and "\n" not in str(refused.value)


def test_a_model_file_too_large_for_memory_is_refused_naming_the_file(tmp_path):
    """A hand-edited model.json: refused when loaded, before anything is allocated, naming the file."""
    import json

    from aevb.checkpoint import load_model, save_model
    from aevb.models.build import build_model
    from aevb.models.vae import ModelConfig

    save_model(build_model(ModelConfig(data_dim=6, latent_dim=2, hidden_units=3)), tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["model"]["hidden_units"] = 10**10
    (tmp_path / "model.json").write_text(json.dumps(meta))
    started = time.perf_counter()
    with pytest.raises(
        AevbError, match=r"model\.json: model: a model of .* hidden_units 10000000000 .* needs at least"
    ):
        load_model(tmp_path)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    "flags, setting",
    [
        (["--hidden-units", "1e10"], "--hidden-units 10000000000"),
        (["--latent-dim", "1e9", "--hidden-units", "500"], "--latent-dim 1000000000"),
    ],
)
def test_train_refuses_a_model_too_large_for_memory_in_one_line(tmp_path, capsys, flags, setting):
    run = tmp_path / "huge"
    options = [*SMALL]
    for flag in flags:  # the case's sizes replace SMALL's
        if flag in options:
            del options[options.index(flag) : options.index(flag) + 2]
    assert_one_line_error(*run_cli(capsys, ["train", *options, *flags, "--out", run]), setting, "memory available")
    assert not (run / "config.json").exists()


def test_an_image_shape_must_hold_data_dim_pixels():
    from aevb.models.vae import ModelConfig

    with pytest.raises(AevbError, match=r"`image_shape` 7×7 has 49 values but `data_dim` is 784"):
        ModelConfig(data_dim=784, image_shape=(7, 7))
    with pytest.raises(AevbError, match=r"`image_shape` \(28, 28, 1\) has 28 channels; images have 1 \(grey\), 3"):
        ModelConfig(data_dim=784, image_shape=(28, 28, 1))
    with pytest.raises(AevbError, match="`image_shape` must be \\(height, width\\) or \\(channels, height, width\\)"):
        ModelConfig(data_dim=784, image_shape=(784,))
    assert ModelConfig(data_dim=784, image_shape=(1, 28, 28)).image_shape == (28, 28)  # grey, as stored before colour
    assert ModelConfig(data_dim=3 * 784, image_shape=(3, 28, 28)).channels == 3
    assert ModelConfig(data_dim=560, image_shape=(28, 20), architecture="conv").image_shape == (28, 20)


# -------------------------------------------------------------------------------- training


def test_iwae_training_with_a_million_samples_per_datapoint_is_refused_up_front(tmp_path, capsys):
    run = tmp_path / "iwae"
    line = assert_one_line_error(
        *run_cli(capsys, ["train", *SMALL, "--estimator", "IWAE", "--samples-per-datapoint", "1e6", "--out", run]),
        "samples-per-datapoint 1000000",
        "batch-size 100",
        "memory available",
    )
    assert "100,000,000 decoded rows" in line
    assert not (run / "config.json").exists()  # refused before the run directory was made


def test_the_trainer_itself_refuses_a_step_that_cannot_fit():
    from aevb.models.build import build_model
    from aevb.models.vae import ModelConfig
    from aevb.training import TrainConfig, Trainer

    model = build_model(ModelConfig(data_dim=784, latent_dim=2, hidden_units=20))
    config = TrainConfig(estimator="IWAE", num_samples=10**6, max_samples=1000, step_size=0.01)
    with pytest.raises(AevbError, match="`num_samples` 1000000 and `batch_size` 100"):
        Trainer(model, torch.rand(200, 784), config)


# -------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("out", ["grid.png", "samples.npy"])
def test_sample_refuses_a_billion_samples_in_one_line(small_run, tmp_path, capsys, out):
    assert_one_line_error(
        *run_cli(capsys, ["sample", small_run, "--num", "1e9", "--out", tmp_path / out]),
        "1000000000 samples of 784 pixels",
        "memory available",
    )
    assert not (tmp_path / out).exists()


# ----------------------------------------------------------------------------- conditional


def test_labels_of_ten_to_the_twelve_are_refused_in_one_line(tmp_path, capsys):
    data = tmp_path / "labelled.npz"
    rng = np.random.default_rng(0)
    labels = np.arange(60, dtype=np.int64) % 3
    labels[7] = 10**12
    np.savez(data, train=rng.random((60, 16)).astype(np.float32), train_labels=labels)
    line = assert_one_line_error(
        *run_cli(capsys, ["train", "--dataset", data, "--conditional", *SMALL, "--out", tmp_path / "run"]),
        "one-hot",
        "1000000000001 classes",
        "memory available",
    )
    assert "labelled" in line


# ------------------------------------------------------------------------------ evaluation


def _record_rows(monkeypatch, owner, name) -> list[int]:
    """Replace ``owner.name`` (or ``owner[name]`` for a dict) — a function taking (model, x,
    num_samples, ...) — with one that records the (datapoint, sample) rows of every call."""
    original = owner[name] if isinstance(owner, dict) else getattr(owner, name)
    rows = []

    def recorded(model, x, num_samples, *args, **kwargs):
        rows.append(x.shape[0] * num_samples)
        return original(model, x, num_samples, *args, **kwargs)

    if isinstance(owner, dict):
        monkeypatch.setitem(owner, name, recorded)
    else:
        monkeypatch.setattr(owner, name, recorded)
    return rows


@pytest.mark.parametrize("estimator", ["A", "B", "IWAE"])
def test_the_samples_of_one_datapoint_are_streamed_and_combined_exactly(monkeypatch, estimator):
    from aevb.evaluation import per_datapoint_bound
    from aevb.models.build import build_model
    from aevb.models.vae import ModelConfig
    from aevb.objectives import estimators

    torch.manual_seed(0)
    model = build_model(ModelConfig(data_dim=12, latent_dim=2, hidden_units=5, init_std=0.5))
    x = torch.rand(1, 12)
    rows = _record_rows(monkeypatch, estimators.ESTIMATORS, estimator)
    # 8 samples × 1 point × J = 2 is 16 normal draws a chunk: torch's CPU normal sampler fills
    # blocks of 16, so the chunks draw exactly the ε of the single pass, and the estimates agree
    # to float rounding (a different ε would differ by the Monte Carlo error, ~0.1 nats here).
    torch.manual_seed(1)
    streamed = per_datapoint_bound(model, x, estimator=estimator, num_samples=64, batch_size=8)
    assert rows == [8] * 8
    rows.clear()
    torch.manual_seed(1)
    whole = per_datapoint_bound(model, x, estimator=estimator, num_samples=64, batch_size=10_000)
    assert rows == [64]
    torch.testing.assert_close(streamed, whole, rtol=1e-6, atol=1e-5)


def test_many_datapoints_with_many_samples_each_stay_within_the_chunk(monkeypatch):
    from aevb.evaluation import evaluate_bound
    from aevb.models.build import build_model
    from aevb.models.vae import ModelConfig
    from aevb.objectives import estimators

    model = build_model(ModelConfig(data_dim=12, latent_dim=2, hidden_units=5))
    rows = _record_rows(monkeypatch, estimators.ESTIMATORS, "B")
    estimate = evaluate_bound(model, torch.rand(5, 12), num_samples=1000, batch_size=300)
    assert max(rows) <= 300 and sum(rows) == 5 * 1000
    assert estimate.num_datapoints == 5 and np.isfinite(estimate.mean)


_PEAK_MEMORY = """
import resource, sys
from aevb.cli import main
code = main(sys.argv[1:])
print("PEAK_KIB", code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_memory_of_evaluate(run: Path, samples: int) -> int:
    """Peak resident memory (bytes) of ``aevb evaluate RUN --samples N --num-points 1`` in a fresh process."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _PEAK_MEMORY,
            "evaluate",
            str(run),
            "--samples",
            str(samples),
            "--num-points",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = [line for line in result.stdout.splitlines() if line.startswith("PEAK_KIB")]
    assert result.returncode == 0 and line, result.stderr
    _, code, peak = line[0].split()
    assert code == "0", result.stderr
    return int(peak) * 1024  # Linux reports kibibytes


def test_evaluate_with_many_samples_for_one_point_stays_in_bounded_memory(small_run):
    # 400,000 samples of one point held at once would take 400,000 × 784 float32 logits alone,
    # 1.25 GB, and twice that with the log-density terms; streamed, 20,000 rows at a time (the
    # evaluate default), the peak is that of a small evaluation.
    baseline = _peak_memory_of_evaluate(small_run, 1)
    peak = _peak_memory_of_evaluate(small_run, 400_000)
    assert peak - baseline < 400 * 10**6, (baseline, peak)


@pytest.mark.parametrize("fast", [True, False])
def test_importance_sampling_streams_the_samples_of_one_datapoint(monkeypatch, fast):
    # Already streamed before issue 14 (a guard, not a regression test): k = 5,000 for one point
    # is decoded at most max_rows (datapoint, sample) pairs at a time, on the fast path
    # (aevb.evaluation.decoding) and on the reference.
    from aevb.evaluation import importance_sampling
    from aevb.models.build import build_model
    from aevb.models.vae import ModelConfig

    model = build_model(ModelConfig(data_dim=12, latent_dim=2, hidden_units=5))
    if fast:
        original, rows = importance_sampling.fast_importance_weights, []

        def recorded(model, x, mean, std, num_samples, *args, **kwargs):
            rows.append(x.shape[0] * num_samples)
            return original(model, x, mean, std, num_samples, *args, **kwargs)

        monkeypatch.setattr(importance_sampling, "fast_importance_weights", recorded)
    else:
        monkeypatch.setattr(importance_sampling, "fast_importance_weights_apply", lambda model: False)
        rows = _record_rows(monkeypatch, importance_sampling, "log_importance_weights")
    estimate = importance_sampling.estimate_log_likelihood(model, torch.rand(1, 12), num_samples=5000, max_rows=256)
    assert max(rows) <= 256 and sum(rows) == 5000 and np.isfinite(estimate.mean)


def test_hmc_streams_its_samples_and_gives_the_numbers_of_one_pass(monkeypatch):
    from aevb.evaluation import hmc_estimator
    from aevb.models.build import build_model
    from aevb.models.vae import ModelConfig

    torch.manual_seed(0)
    model = build_model(ModelConfig(data_dim=6, latent_dim=2, hidden_units=4, init_std=0.5))
    x = torch.rand(2, 6)

    def estimate():
        return hmc_estimator.hmc_log_likelihood(
            model, x, num_samples=23, burn_in=10, gap=3, generator=torch.Generator().manual_seed(5)
        )

    whole, whole_acceptance = estimate()
    drawn = _recording_hmc(monkeypatch, hmc_estimator)
    monkeypatch.setattr(hmc_estimator, "HMC_CHUNK_ROWS", 10)  # 5 samples of the 2 chains at a time
    streamed, streamed_acceptance = estimate()
    assert max(drawn) <= 5 and sum(drawn) == 2 * 23 - 5 + 3  # the first chunk comes from sample_hmc
    torch.testing.assert_close(streamed.per_datapoint, whole.per_datapoint, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(streamed.per_datapoint_stderr, whole.per_datapoint_stderr, rtol=1e-4, atol=1e-6)
    assert streamed_acceptance == pytest.approx(whole_acceptance, rel=1e-6)


def _recording_hmc(monkeypatch, module) -> list[int]:
    """Record the number of samples of every ``continue_hmc`` call in ``module``."""
    original, drawn = module.continue_hmc, []

    def recorded(log_density, state, num_samples, **options):
        drawn.append(num_samples)
        return original(log_density, state, num_samples, **options)

    monkeypatch.setattr(module, "continue_hmc", recorded)
    return drawn


@pytest.mark.parametrize(
    "budget_rows, workers, rows", [(20000, 4, 2048), (5000, 4, 1250), (1100, 2, 550), (700, 1, 700)]
)
def test_importance_sampling_workers_share_the_memory_budget(monkeypatch, budget_rows, workers, rows):
    # The fast path's workers each hold a chunk: together within memory_budget, each chunk at most
    # CPU_WORKER_CHUNK_ROWS, and fewer workers where the budget would leave them fewer than
    # MIN_WORKER_CHUNK_ROWS rows.
    from aevb.evaluation import importance_sampling
    from aevb.models.build import build_model
    from aevb.models.vae import ModelConfig

    model = build_model(ModelConfig(data_dim=12, latent_dim=2, hidden_units=5))
    per_row = importance_sampling.rows_within_budget(model, 12, 10**9)
    budget = budget_rows * (10**9 // per_row)  # exactly budget_rows rows
    assert importance_sampling.rows_within_budget(model, 12, budget) == budget_rows
    original, chunk_rows, counts = importance_sampling.fast_importance_weights, [], []

    def recorded(model, x, mean, std, num_samples, *args, **kwargs):
        chunk_rows.append(x.shape[0] * num_samples)
        return original(model, x, mean, std, num_samples, *args, **kwargs)

    class Recorded(importance_sampling.ChunkWorkers):
        def map(self, tasks):
            counts.append(self.count)
            return super().map(tasks)

    monkeypatch.setattr(importance_sampling, "fast_importance_weights", recorded)
    monkeypatch.setattr(importance_sampling, "ChunkWorkers", Recorded)
    estimate = importance_sampling.estimate_log_likelihood(
        model, torch.rand(3, 12), num_samples=5000, memory_budget=budget, threads=4
    )
    assert counts == [workers] and max(chunk_rows) == rows and sum(chunk_rows) == 3 * 5000
    assert counts[0] * max(chunk_rows) <= budget_rows and np.isfinite(estimate.mean)
