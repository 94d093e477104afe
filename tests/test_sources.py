"""Any data in (aevb.data.sources): the Trainer trains on tensors of any dtype, numpy arrays, map-style
Datasets and DataLoaders, and trains on each exactly what it trains on the (N, D) float32 tensor of
the same values; a Dataset is read minibatch by minibatch (under torchrun, each process its shard)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from aevb import ModelConfig, TrainConfig
from aevb.data import load_dataset
from aevb.data.sources import NpyDataset, StreamedRows, as_rows
from aevb.errors import AevbError
from aevb.models.build import build_model
from aevb.runs import evaluate_run, train_run
from aevb.runs.data_config import DataConfig, data_fingerprint, load_data, value_ranges
from aevb.runs.spec import RunSpec
from aevb.training import Trainer

CONFIG = TrainConfig(max_samples=1200, step_size=0.02, seed=3, evals_per_decade=1, first_eval=600)


@pytest.fixture(scope="module")
def grey_levels() -> np.ndarray:
    """600 MNIST images as uint8 grey levels (N, 28, 28)."""
    data = load_dataset("mnist-sample", pixel_divisor=255)
    return (data.train[:600] * 255).round().to(torch.uint8).numpy().reshape(-1, 28, 28)


def _train(train, valid=None, config=CONFIG, **options):
    """Final metrics and the flattened parameters of a fixed small model trained on ``train``."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(data_dim=784, latent_dim=3, hidden_units=20))
    result = Trainer(model, train, config, valid=valid, threads=1, **options).fit()
    return result.history[-1], torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.fixture(scope="module")
def reference(grey_levels):
    """Training on the (N, D) float32 tensor k / 255: what every other form of the data must give."""
    rows = torch.from_numpy(grey_levels).reshape(-1, 784).float() / 255
    return rows, _train(rows, valid=rows[:200])


def _same(got, expected) -> None:
    assert got[0].train_bound == expected[0].train_bound
    assert torch.equal(got[1], expected[1])


@pytest.mark.parametrize(
    "form",
    ["uint8 images", "uint8 numpy rows", "float64 tensor", "channels-last images", "channels-first images"],
)
def test_any_array_trains_as_the_float32_rows(grey_levels, reference, form):
    rows, expected = reference
    data = {
        "uint8 images": lambda: torch.from_numpy(grey_levels),
        "uint8 numpy rows": lambda: grey_levels.reshape(-1, 784),
        "float64 tensor": lambda: rows.double(),
        "channels-last images": lambda: grey_levels[..., None],
        "channels-first images": lambda: torch.from_numpy(grey_levels[:, None]),
    }[form]()
    _same(_train(data, valid=rows[:200]), expected)


def test_a_binary_integer_or_boolean_tensor_is_read_as_its_values():
    binary = torch.rand(300, 784, generator=torch.Generator().manual_seed(1)) < 0.3
    expected = _train(binary.float())
    _same(_train(binary), expected)
    _same(_train(binary.long()), expected)


def test_a_dataset_or_a_dataloader_is_streamed_and_trains_as_the_tensor(grey_levels, reference, tmp_path):
    rows, expected = reference
    labels = torch.arange(600) % 10
    path = tmp_path / "images.npy"
    np.save(path, grey_levels)
    for data in (
        TensorDataset(rows, labels),  # (x, y) items: y unused
        NpyDataset(path),  # memory-mapped uint8 images, read a minibatch at a time
        DataLoader(NpyDataset(path), batch_size=100, shuffle=True),  # its dataset; the Trainer's order
    ):
        _same(_train(data, valid=TensorDataset(rows[:200])), expected)


def test_streamed_validation_data_give_the_in_memory_bound(reference):
    rows, expected = reference
    got = _train(rows, valid=TensorDataset(rows[:200]))
    assert got[0].valid_bound == expected[0].valid_bound


def test_dynamic_binarisation_of_streamed_rows_trains_as_in_memory(reference):
    rows, _ = reference
    config = TrainConfig(**(CONFIG.to_dict() | {"binarize": "dynamic"}))
    in_memory, streamed = _train(rows, config=config), _train(TensorDataset(rows), config=config)
    assert torch.equal(in_memory[1], streamed[1])  # the minibatches' draws are the Trainer's
    assert np.isfinite(streamed[0].train_bound)  # (scored on fixed draws seeded per slice)


def test_streamed_rows_read_slices_and_scan_in_chunks(grey_levels, tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, grey_levels)
    rows = as_rows(NpyDataset(path), "train")
    assert isinstance(rows, StreamedRows) and rows.shape == (600, 784) and len(rows) == 600
    expected = torch.from_numpy(grey_levels).reshape(-1, 784).float() / 255
    assert torch.equal(rows[10:20], expected[10:20])
    assert torch.equal(rows.read(torch.tensor([5, 3, 599])), expected[[5, 3, 599]])
    torch.testing.assert_close(rows.mean_row(), expected.double().mean(0, keepdim=True).float())
    assert rows.value_range().tolist() == [0.0, 1.0]
    assert torch.equal(rows.binarized(1)[0:50], rows.binarized(1)[0:50])  # a fixed draw


class _Stream(IterableDataset):
    def __iter__(self):
        yield torch.zeros(4)


class _Ragged(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, index):
        return torch.zeros(4 if index == 0 else 5)


@pytest.mark.parametrize(
    "data, words",
    [
        ([[0.0, 1.0]], "must be a tensor, a numpy array, a map-style torch Dataset or a DataLoader, got list"),
        (torch.zeros(10, 4, dtype=torch.complex64), "must hold real numbers"),
        (np.array([["a", "b"]], dtype=object), "must hold real numbers"),
        (_Stream(), "iterable-style dataset"),
        (_Ragged(), "reading items 0..9 failed: stack expects each tensor to be equal size"),
        (TensorDataset(torch.zeros(0, 4)), "empty dataset"),
    ],
    ids=["list", "complex", "object array", "iterable dataset", "ragged items", "empty dataset"],
)
def test_data_that_are_not_rows_of_numbers_are_one_line_errors(data, words):
    model = build_model(ModelConfig(data_dim=4, latent_dim=2, hidden_units=5, likelihood="gaussian"))
    with pytest.raises(AevbError) as error:
        trainer = Trainer(model, data, TrainConfig(max_samples=20, step_size=0.01, batch_size=5), threads=1)
        trainer.fit()  # (a ragged dataset shows itself when its rows are read)
    assert words in str(error.value) and "\n" not in str(error.value)


DISTRIBUTED_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, torch
    from safetensors.torch import save_file
    from aevb import ModelConfig, TrainConfig
    from aevb.data.sources import NpyDataset
    from aevb.models.build import build_model
    from aevb.training import Trainer
    from aevb.training.distributed import from_environment

    class Counting(NpyDataset):  # the rows this process reads for its minibatch shards
        steps_rows = 0
        def __getitems__(self, indices):
            if len(indices) in (7, 8):  # (not the scans, slices and first row read besides)
                Counting.steps_rows += len(indices)
            return super().__getitems__(indices)

    path, out = sys.argv[1], sys.argv[2]
    group = from_environment(torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model(ModelConfig(data_dim=784, latent_dim=3, hidden_units=20))
    config = TrainConfig(max_samples=1500, step_size=0.01, seed=3, batch_size=15, evals_per_decade=1,
                         first_eval=1500, eval_subset=100)
    data = Counting(path) if group.world_size > 1 else torch.from_numpy(np.load(path))
    Trainer(model, data, config, group=group, threads=1).fit()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}-{group.rank}.safetensors")
    with open(f"{out}-{group.rank}.rows", "w") as rows:
        rows.write(str(Counting.steps_rows))
    """
)


def test_a_streamed_dataset_trains_under_torchrun_each_process_reading_its_shard(grey_levels, tmp_path):
    from safetensors.torch import load_file

    path = tmp_path / "images.npy"
    np.save(path, grey_levels)
    script = tmp_path / "train.py"
    script.write_text(DISTRIBUTED_SCRIPT)
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, script, path, tmp_path / "one"], check=True, env=env, timeout=300)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    done = subprocess.run(
        [*command, script, path, tmp_path / "two"], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows_read = [(tmp_path / f"two-{rank}.rows").read_text() for rank in (0, 1)]
    assert rows_read == [str(100 * 8), str(100 * 7)]  # 100 steps of M = 15: shards of 8 and 7
    expected, got = load_file(tmp_path / "one-0.safetensors"), load_file(tmp_path / "two-0.safetensors")
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-4, atol=2e-5, msg=name)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "aevb", *args], capture_output=True, text=True, env=env, timeout=300)


def test_a_streamed_npy_file_trains_and_evaluates_as_the_loaded_file(grey_levels, tmp_path):
    path = tmp_path / "faces.npy"
    np.save(path, grey_levels)
    settings = ["--dataset", str(path), "--max-samples", "1500", "--latent-dim", "3", "--hidden-units", "20"]
    settings += ["--step-size", "0.02", "--threads", "1", "--no-progress"]
    for name, extra in (("loaded", []), ("streamed", ["--stream"])):
        done = _cli("train", *settings, *extra, "--out", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
    loaded, streamed = (
        json.loads((tmp_path / name / "config.json").read_text())["data"] for name in ("loaded", "streamed")
    )
    assert streamed["stream"] and streamed["values_sha256"] == loaded["values_sha256"]
    assert streamed["train_size"] == 480
    metrics = [(tmp_path / name / "metrics.jsonl").read_text().splitlines() for name in ("loaded", "streamed")]
    assert [json.loads(line)["valid_bound"] for line in metrics[0]] == [
        json.loads(line)["valid_bound"] for line in metrics[1]
    ]
    evaluations = [
        _cli("evaluate", str(tmp_path / name), "--nll", "--k", "10", "--json") for name in ("loaded", "streamed")
    ]
    values = [json.loads(done.stdout) for done in evaluations]
    assert values[0]["log_likelihood"] == values[1]["log_likelihood"]
    assert values[0]["test_bound"] == values[1]["test_bound"]


@pytest.mark.parametrize(
    "dataset, extra, words",
    [
        ("mnist-sample", [], "mnist-sample is loaded into memory; --stream reads a user's .npy file as needed"),
        ("file.npz", [], "only .npy files can be streamed (--stream)"),
        ("file.npy", ["--merge-valid"], "--merge-valid joins two splits in memory; it does not go with --stream"),
    ],
    ids=["named dataset", "npz archive", "merge-valid"],
)
def test_what_cannot_stream_is_refused_in_one_line(tmp_path, dataset, extra, words):
    if dataset.startswith("file"):
        np.save(tmp_path / "file.npy", np.zeros((20, 4), dtype=np.float32))
        np.savez(tmp_path / "file.npz", train=np.zeros((20, 4), dtype=np.float32))
        dataset = str(tmp_path / dataset)
    done = _cli("train", "--dataset", dataset, "--stream", *extra, "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and words in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_streamed_training_set_cut_to_a_limit_holds_the_loaded_rows(grey_levels, tmp_path):
    path = tmp_path / "faces.npy"
    np.save(path, grey_levels)
    loaded, streamed = (load_data(DataConfig(str(path), train_limit=100, stream=stream)) for stream in (False, True))
    assert isinstance(streamed.train, StreamedRows) and streamed.train.shape == (100, 784)
    assert torch.equal(streamed.train[0:100], loaded.train)
    assert data_fingerprint(streamed) == data_fingerprint(loaded)
    assert value_ranges(streamed) == value_ranges(loaded)
    assert streamed.is_binary == loaded.is_binary is False


def test_train_run_takes_an_array_or_a_dataset_and_its_run_asks_for_them_again(grey_levels, tmp_path):
    spec_settings = {
        "model": {"latent_dim": 3, "hidden_units": 20},
        "training": {"max_samples": 1200, "step_size": 0.02},
        "run": {"threads": 1, "progress": False},
    }
    spec = RunSpec.from_settings(spec_settings)
    array_run = train_run(spec, tmp_path / "array", data=grey_levels)
    dataset = TensorDataset(torch.from_numpy(grey_levels))  # streamed: read as needed
    dataset_run = train_run(spec, tmp_path / "dataset", data=dataset)
    recorded = json.loads((array_run / "config.json").read_text())["data"]
    assert recorded["given"] and (recorded["train_size"], recorded["valid_size"], recorded["test_size"]) == (
        480,
        60,
        60,
    )
    assert recorded["pixel_divisor"] == 255.0 and "dataset" not in recorded
    assert (array_run / "metrics.jsonl").read_text().splitlines()[-1].split('"seconds"')[0] == (
        (dataset_run / "metrics.jsonl").read_text().splitlines()[-1].split('"seconds"')[0]
    )  # the same split, the same run
    with pytest.raises(AevbError, match=r"trained on data given to train_run in memory, which no file holds"):
        evaluate_run(array_run)
    with pytest.raises(AevbError, match=r"changed since it began"):
        evaluate_run(array_run, data=grey_levels[::-1].copy())
    assert (
        evaluate_run(array_run, data=grey_levels)["test_bound"] == evaluate_run(dataset_run, data=dataset)["test_bound"]
    )
    # Another split seed: another split, recorded, and used again when the run reads its data.
    reseeded = train_run(
        RunSpec.from_settings({**spec_settings, "data": {"split_seed": 5}}), tmp_path / "seed5", data=grey_levels
    )
    recorded_again = json.loads((reseeded / "config.json").read_text())["data"]
    assert recorded_again["split_seed"] == 5 and recorded_again["values_sha256"] != recorded["values_sha256"]
    assert math.isfinite(evaluate_run(reseeded, data=grey_levels)["test_bound"])
