"""End-to-end tests of the ``aevb`` command line: train, evaluate, sample.

Most tests call :func:`aevb.cli.main` in-process (fast); one runs the real console script in a
subprocess. Every training run is tiny (16 hidden units, a few thousand samples).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aevb.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRICS_KEYS = {"epoch", "samples", "train_bound", "valid_bound", "seconds", "samples_per_second"}
FAST = ["--hidden-units", "16", "--selection-steps", "5", "--eval-subset", "500", "--no-progress"]
TINY = [*FAST, "--max-samples", "2000", "--step-size", "0.02"]


pytestmark = pytest.mark.usefixtures("one_thread")


def call(argv: list[str]) -> int:
    """main(argv) as the console script would exit: argparse's SystemExit becomes its code."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1


def run_cli(capsys, argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = call(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(code: int, out: str, err: str) -> None:
    """Exit status 2, nothing on stdout, one line on stderr starting with 'aevb', no traceback."""
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("aevb"), err
    assert out == ""


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 100


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``directory`` (a run's best/ and checkpoints/ too), with its bytes and mtime."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, one_thread) -> Path:
    """One tiny run on the embedded MNIST sample, shared by the tests that only read it."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    assert call(["train", "--latent-dim", "3", *TINY, "--seed", "0", "--out", run]) == 0
    return run


def copy_run(run: Path, target: Path) -> Path:
    shutil.copytree(run, target)
    return target


# ----------------------------------------------------------------------------------- train


def test_train_writes_a_complete_run(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert {
        "config.json",
        "metrics.jsonl",
        "model.safetensors",
        "model.json",
        "summary.json",
        "samples.png",
        "reconstructions.png",
        "bound.png",
    } <= names
    assert "manifold.png" not in names  # only for a 2-D latent space
    for figure in ("samples.png", "reconstructions.png", "bound.png"):
        assert is_png(tiny_run / figure), figure

    config = json.loads((tiny_run / "config.json").read_text())
    assert config["data"]["dataset"] == "mnist-sample"
    assert config["model"]["latent_dim"] == 3 and config["model"]["hidden_units"] == 16
    assert config["model"]["likelihood"] == "bernoulli"
    assert config["training"]["seed"] == 0 and config["training"]["step_size"] == 0.02
    assert config["training"]["max_samples"] == 2000
    assert shlex.split(config["command"])[:2] == ["aevb", "train"]  # main()'s argv, not pytest's

    model_json = json.loads((tiny_run / "model.json").read_text())
    assert model_json["format_version"] == 1 and model_json["model"]["latent_dim"] == 3

    metrics = read_metrics(tiny_run)
    assert metrics
    for line in metrics:
        assert METRICS_KEYS <= set(line), line
        assert math.isfinite(line["train_bound"]) and math.isfinite(line["valid_bound"])
    assert metrics[-1]["samples"] == 2000

    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["samples"] == 2000
    assert summary["step_size"] == 0.02
    assert summary["valid_bound"] == metrics[-1]["valid_bound"] < 0
    from aevb import native

    assert summary["engine"] == ("fused, native kernels" if native.load() is not None else "fused, torch operations")


def test_same_seed_reproduces_the_run_from_its_config(tiny_run, tmp_path):
    """config.json holds enough to rerun; the rerun's weights are the same bytes."""
    config = json.loads((tiny_run / "config.json").read_text())
    model, training = config["model"], config["training"]
    rerun = tmp_path / "rerun"
    argv = [
        "train",
        "--dataset",
        config["data"]["dataset"],
        "--latent-dim",
        model["latent_dim"],
        "--hidden-units",
        model["hidden_units"],
        "--max-samples",
        training["max_samples"],
        "--step-size",
        training["step_size"],
        "--eval-subset",
        training["eval_subset"],
        "--seed",
        training["seed"],
        "--no-progress",
        "--out",
        rerun,
    ]
    assert call(argv) == 0
    assert (rerun / "model.safetensors").read_bytes() == (tiny_run / "model.safetensors").read_bytes()
    assert json.loads((rerun / "model.json").read_text()) == json.loads((tiny_run / "model.json").read_text())


def test_overwrite_with_another_seed_replaces_the_whole_run(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "manifold.png").write_bytes(PNG_MAGIC + b"left over from an earlier 2-D run")
    assert call(["train", "--latent-dim", "3", *TINY, "--seed", "1", "--out", run, "--overwrite"]) == 0
    first, second = load_file(tiny_run / "model.safetensors"), load_file(run / "model.safetensors")
    assert first.keys() == second.keys()
    assert any(not torch.equal(first[k], second[k]) for k in first)  # another seed, other weights
    assert json.loads((run / "config.json").read_text())["training"]["seed"] == 1
    assert len(read_metrics(run)) == len(read_metrics(tiny_run))  # no lines of the old run kept
    assert not (run / "manifold.png").exists()  # nothing of the old run mixed into the new one


def test_existing_run_is_refused_and_left_untouched(tiny_run, capsys):
    before = snapshot(tiny_run)
    assert_usage_error(*run_cli(capsys, ["train", *TINY, "--seed", "5", "--out", tiny_run]))
    assert snapshot(tiny_run) == before


def test_user_real_valued_npy_gets_a_gaussian_decoder(tmp_path, monkeypatch, capsys):
    """Also: a relative --dataset path still works for evaluate from another directory."""
    data_dir, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    data_dir.mkdir()
    elsewhere.mkdir()
    rng = np.random.default_rng(0)
    np.save(data_dir / "normal.npy", rng.standard_normal((300, 6)).astype(np.float32))
    monkeypatch.chdir(data_dir)
    run = tmp_path / "run"
    assert call(["train", "--dataset", "normal.npy", *TINY, "--max-samples", "1000", "--out", run]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["likelihood"] == "gaussian"
    assert config["data"]["train_size"] == 240
    assert is_png(run / "bound.png")
    assert not (run / "samples.png").exists()  # (N, D) data have no image shape
    summary = json.loads((run / "summary.json").read_text())
    assert math.isfinite(summary["valid_bound"])

    monkeypatch.chdir(elsewhere)
    code, out, err = run_cli(capsys, ["evaluate", run, "--json", "--samples", "5"])
    assert code == 0, err
    assert math.isfinite(json.loads(out)["test_bound"])
    code, out, err = run_cli(capsys, ["sample", run, "--num", "4", "--out", "z.npy"])
    assert code == 0, err
    assert np.load(elsewhere / "z.npy").shape == (4, 6)
    code, out, err = run_cli(capsys, ["sample", run])  # no image shape: no PNG, a clear message
    assert_usage_error(code, out, err)


def test_epochs_stop_after_epochs_times_training_size(tmp_path):
    """With step-size selection, whose iterations count towards the run."""
    rng = np.random.default_rng(1)
    path = tmp_path / "unit.npy"
    np.save(path, rng.random((300, 6)).astype(np.float32))  # 240 training rows
    run = tmp_path / "run"
    assert call(["train", "--dataset", path, *FAST, "--selection-steps", "2", "--epochs", "3", "--out", run]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["likelihood"] == "bernoulli"  # values in [0, 1]
    summary, last = json.loads((run / "summary.json").read_text()), read_metrics(run)[-1]
    assert summary["samples"] == last["samples"] == 3 * 240
    assert last["epoch"] == pytest.approx(3.0)
    assert summary["step_size"] in (0.01, 0.02, 0.1) and len(summary["step_size_trials"]) == 3


def test_max_samples_below_the_selection_budget(tmp_path):
    """200 selection steps of 100 would overshoot --max-samples 500: the selection is shortened."""
    run = tmp_path / "run"
    assert (
        call(
            [
                "train",
                "--hidden-units",
                "16",
                "--eval-subset",
                "200",
                "--no-progress",
                "--max-samples",
                "500",
                "--out",
                run,
            ]
        )
        == 0
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["samples"] == read_metrics(run)[-1]["samples"] == 500
    assert json.loads((run / "config.json").read_text())["training"]["selection_steps"] < 5


# ----------------------------------------------------------------------------------- evaluate


def test_evaluate_json_is_one_object_close_to_the_validation_bound(tiny_run, capsys):
    code, out, err = run_cli(capsys, ["evaluate", tiny_run, "--json", "--samples", "10"])
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1
    result = json.loads(out)
    assert isinstance(result, dict)
    test_bound = result["test_bound"]
    assert math.isfinite(test_bound) and test_bound < 0
    valid_bound = json.loads((tiny_run / "summary.json").read_text())["valid_bound"]
    assert abs(test_bound - valid_bound) < 15, (test_bound, valid_bound)
    assert result["samples_per_datapoint"] == 10

    code, out, err = run_cli(capsys, ["evaluate", tiny_run, "--json", "--split", "valid", "--samples", "2"])
    assert code == 0, err
    result = json.loads(out)
    assert result["split"] == "valid" and abs(result["valid_bound"] - valid_bound) < 15

    code, out, err = run_cli(capsys, ["evaluate", tiny_run, "--split", "valid", "--samples", "1"])
    assert code == 0, err
    assert "lower bound" in out and "valid" in out


def test_evaluate_log_likelihood_by_importance_sampling_and_hmc(tiny_run, capsys):
    code, out, err = run_cli(
        capsys,
        [
            "evaluate",
            tiny_run,
            "--json",
            "--samples",
            "5",
            "--num-points",
            "40",
            "--nll",
            "--k",
            "200",
            "--hmc",
            "--hmc-samples",
            "20",
        ],
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["num_datapoints"] == 40 and result["log_likelihood_samples"] == 200
    bound, log_likelihood = result["test_bound"], result["log_likelihood"]
    assert bound < 0 and log_likelihood < 0
    # log p(x) lies above the bound (same 40 points); the IS error is small compared with the gap.
    assert log_likelihood > bound
    assert 0 < result["log_likelihood_stderr"] < log_likelihood - bound
    assert math.isfinite(result["hmc_log_likelihood"]) and 0 < result["hmc_acceptance"] <= 1
    # Appendix D and importance sampling estimate the same quantity (loose: Nz = 3, tiny model).
    assert abs(result["hmc_log_likelihood"] - log_likelihood) < 0.1 * abs(log_likelihood)

    code, out, err = run_cli(capsys, ["evaluate", tiny_run, "--num-points", "10", "--nll", "--k", "50"])
    assert code == 0, err
    assert "log p(x), importance sampling, k = 50" in out and "negative log-likelihood" in out
    code, out, err = run_cli(capsys, ["evaluate", tiny_run, "--num-points", "10", "--nll", "--k", "1"])
    assert code == 0 and "k = 1: " in out and "(no Monte Carlo error with k = 1)" in out and "nan" not in out, out


def test_iwae_training_objective(tmp_path, capsys):
    run = tmp_path / "iwae"
    code, _, err = run_cli(
        capsys,
        ["train", "--estimator", "iwae", "--samples-per-datapoint", "5", "--latent-dim", "3", *TINY, "--out", run],
    )
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["training"]["estimator"] == "IWAE" and config["training"]["num_samples"] == 5
    assert all(math.isfinite(line["valid_bound"]) for line in read_metrics(run))


def test_the_iwae_protocols_training_options(tmp_path, capsys):
    run = tmp_path / "protocol"
    code, _, err = run_cli(
        capsys,
        [
            "train",
            "--merge-valid",
            "--pixel-divisor",
            "255",
            "--binarize",
            "dynamic",
            "--hidden-units",
            "16,16",
            "--init",
            "glorot",
            "--optimizer",
            "adam",
            "--step-size",
            "1e-3",
            "--optimizer-eps",
            "5e-6",
            "--schedule",
            "iwae",
            "--batch-size",
            "20",
            "--prior-precision",
            "0",
            "--max-samples",
            "3280",
            "--eval-subset",
            "200",
            "--no-progress",
            "--out",
            run,
        ],
    )
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["train_size"] == 10000 and config["data"]["valid_size"] == 0
    assert config["data"]["pixel_divisor"] == 255 and config["model"]["init"] == "glorot"
    assert (config["training"]["schedule"], config["training"]["optimizer_eps"]) == ("iwae", 5e-6)
    lines = read_metrics(run)
    assert lines[-1]["valid_bound"] is None and lines[-1]["step_size"] == pytest.approx(1e-4)
    code, _, err = run_cli(capsys, ["evaluate", run, "--split", "valid"])
    assert code == 2 and "no valid split (the run trained on train + valid)" in err


# ----------------------------------------------------------------------------------- sample


def test_sample_png_and_npy(tiny_run, tmp_path, capsys):
    code, out, err = run_cli(capsys, ["sample", tiny_run, "--num", "6", "--out", tmp_path / "grid.png"])
    assert code == 0, err
    assert is_png(tmp_path / "grid.png")

    arrays = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        code, out, err = run_cli(
            capsys, ["sample", tiny_run, "--num", "7", "--seed", seed, "--out", tmp_path / f"{name}.npy"]
        )
        assert code == 0, err
        arrays[name] = np.load(tmp_path / f"{name}.npy")
    a = arrays["a"]
    assert a.shape[0] == 7 and a.reshape(7, -1).shape == (7, 784)
    assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    assert np.array_equal(a, arrays["b"])  # same seed, same samples
    assert not np.array_equal(a, arrays["c"])


def test_sample_default_output_in_the_run_dir(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    code, out, err = run_cli(capsys, ["sample", run, "--num", "4", "--seed", "2"])
    assert code == 0, err
    assert is_png(run / "samples-seed2.png")
    assert "samples-seed2.png" in out


# ----------------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", ["train", "evaluate", "sample"])
def test_help_documents_every_option_with_its_default(command, capsys):
    code, out, _ = run_cli(capsys, [command, "--help"])
    assert code == 0
    # One entry per option: a line starting with "  -", up to the next such line or a blank line.
    entries = re.findall(r"^  (-\S+.*?)(?=^  -|^\S|^$|\Z)", out, flags=re.M | re.S)
    options = [entry for entry in entries if not entry.startswith("-h, --help")]
    assert len(options) >= {"train": 25, "evaluate": 5, "sample": 4}[command]
    for entry in options:
        assert "default" in entry, entry
    assert "(default: None)" not in out  # every default is said in words
    if command == "train":
        for option in ("--max-samples", "--latent-dim", "--step-size", "--binarize", "--epochs", "--seed"):
            assert option in out


# ----------------------------------------------------------------------------------- bad input


def _corrupt_npy(tmp_path: Path, _run: Path) -> list:
    path = tmp_path / "corrupt.npy"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    return ["train", "--dataset", path, *TINY, "--out", tmp_path / "out"]


def _out_of_range_npy(tmp_path: Path, _run: Path) -> list:
    path = tmp_path / "wide.npy"
    np.save(path, np.random.default_rng(0).random((300, 6)).astype(np.float32) * 3)
    return ["train", "--dataset", path, "--likelihood", "bernoulli", *TINY, "--out", tmp_path / "out"]


def _missing_mnist(tmp_path: Path, _run: Path) -> list:
    (tmp_path / "empty").mkdir()
    return ["train", "--dataset", "mnist", "--data-dir", tmp_path / "empty", *TINY, "--out", tmp_path / "out"]


def _broken_run(how: str):
    def make(tmp_path: Path, run: Path) -> list:
        broken = copy_run(run, tmp_path / "broken")
        weights = broken / "model.safetensors"
        if how == "truncated":
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        elif how == "garbage":
            weights.write_bytes(np.random.default_rng(0).bytes(3000))
        elif how == "format_version":
            meta = json.loads((broken / "model.json").read_text())
            meta["format_version"] = 99
            (broken / "model.json").write_text(json.dumps(meta))
        elif how == "model config":
            meta = json.loads((broken / "model.json").read_text())
            meta["model"]["latent_dim"] = "three"
            (broken / "model.json").write_text(json.dumps(meta))
        elif how == "run config":
            config = json.loads((broken / "config.json").read_text())
            del config["training"]
            (broken / "config.json").write_text(json.dumps(config))
        return ["evaluate", broken, "--samples", "1"]

    return make


BAD_INPUTS = {
    "unknown option": lambda tmp, run: ["train", "--no-such-option", "3"],
    "latent-dim 0": lambda tmp, run: ["train", "--latent-dim", "0"],
    "max-samples -5": lambda tmp, run: ["train", "--max-samples", "-5"],
    "step-size nan": lambda tmp, run: ["train", "--step-size", "nan"],
    "unknown dataset": lambda tmp, run: ["train", "--dataset", "no-such-dataset", *TINY, "--out", tmp / "o"],
    "missing mnist files": _missing_mnist,
    "corrupt npy": _corrupt_npy,
    "npy outside [0, 1] for bernoulli": _out_of_range_npy,
    "too few samples to select a step size": lambda tmp, run: [
        "train",
        *FAST,
        "--max-samples",
        "50",
        "--out",
        tmp / "o",
    ],
    "evaluate missing dir": lambda tmp, run: ["evaluate", tmp / "no-such-run"],
    "evaluate truncated weights": _broken_run("truncated"),
    "evaluate garbage weights": _broken_run("garbage"),
    "evaluate wrong format_version": _broken_run("format_version"),
    "evaluate bad model config": _broken_run("model config"),
    "evaluate incomplete config.json": _broken_run("run config"),
    "sample --num 0": lambda tmp, run: ["sample", run, "--num", "0"],
    "sample to an unknown file type": lambda tmp, run: ["sample", run, "--out", tmp / "samples.txt"],
    "sample missing dir": lambda tmp, run: ["sample", tmp / "no-such-run"],
    "evaluate --k 0": lambda tmp, run: ["evaluate", run, "--nll", "--k", "0"],
    "evaluate --num-points 0": lambda tmp, run: ["evaluate", run, "--num-points", "0"],
    "unknown estimator": lambda tmp, run: ["train", "--estimator", "C"],
    "pixel divisor below 255": lambda tmp, run: ["train", "--pixel-divisor", "100"],
    "unknown schedule": lambda tmp, run: ["train", "--schedule", "cosine"],
    "optimizer-eps 0": lambda tmp, run: ["train", "--optimizer-eps", "0"],
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_status_2(case, tiny_run, tmp_path, capsys):
    argv = BAD_INPUTS[case](tmp_path, tiny_run)
    assert_usage_error(*run_cli(capsys, argv))
    assert not (tmp_path / "o").exists() and not (tmp_path / "out").exists()  # no half-made run


def test_tensorboard_without_the_package_leaves_no_half_run(tmp_path, capsys):
    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed")
    run = tmp_path / "run"
    assert_usage_error(*run_cli(capsys, ["train", *TINY, "--tensorboard", "--out", run]))
    assert not run.exists()  # so the same command works once tensorboard is installed


# ----------------------------------------------------------------------------------- console script


def test_console_script_end_to_end(tiny_run, tmp_path):
    """The installed entry point: exit statuses and output streams as a shell sees them."""
    done = subprocess.run(
        [sys.executable, "-m", "aevb.cli", "sample", str(tiny_run), "--num", "5", "--out", str(tmp_path / "s.npy")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert np.load(tmp_path / "s.npy").shape[0] == 5

    done = subprocess.run(
        [sys.executable, "-m", "aevb.cli", "evaluate", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("aevb evaluate: error:")


# ----------------------------------------------------------------------------------- real data


def test_frey_with_a_2d_latent_space_on_real_data(shared_data, tmp_path, monkeypatch, capsys):
    """AEVB_DATA_DIR for training, --data-dir for evaluation; the manifold figure for Nz = 2."""
    monkeypatch.setenv("AEVB_DATA_DIR", str(shared_data))
    run = tmp_path / "frey"
    assert (
        call(
            [
                "train",
                "--dataset",
                "frey",
                "--latent-dim",
                "2",
                "--hidden-units",
                "20",
                "--max-samples",
                "3000",
                "--selection-steps",
                "5",
                "--no-progress",
                "--out",
                run,
            ]
        )
        == 0
    )
    assert is_png(run / "manifold.png") and is_png(run / "samples.png")
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["likelihood"] == "gaussian" and config["model"]["sigmoid_mean"] is True
    assert config["data"]["train_size"] == 1565
    summary = json.loads((run / "summary.json").read_text())
    assert math.isfinite(summary["train_bound"]) and math.isfinite(summary["valid_bound"])

    monkeypatch.delenv("AEVB_DATA_DIR")
    code, out, err = run_cli(capsys, ["evaluate", run, "--json", "--samples", "5", "--data-dir", shared_data])
    assert code == 0, err
    result = json.loads(out)
    assert result["dataset"] == "frey" and math.isfinite(result["test_bound"])


@pytest.mark.parametrize("algorithm", ["wake-sleep", "mcem"])
def test_train_with_a_baseline_algorithm(algorithm, tmp_path, capsys):
    run = tmp_path / algorithm
    code, out, err = run_cli(
        capsys, ["train", "--algorithm", algorithm, "--latent-dim", "2", *TINY, "--step-size", "0.02", "--out", run]
    )
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["algorithm"] == algorithm
    lines = read_metrics(run)
    if algorithm == "mcem":  # no encoder, no bound: null in strict JSON, said so on the console
        assert all(line["train_bound"] is None for line in lines) and "has no bound" in out
        assert "NaN" not in (run / "metrics.jsonl").read_text()
    else:
        assert all(math.isfinite(line["train_bound"]) for line in lines)


def test_evaluating_a_run_that_trained_no_encoder_does_without_it(tmp_path, capsys):
    """Monte Carlo EM's encoder never trained: no bound is claimed, importance sampling draws from
    the prior, and the App. D chains start at prior draws resampled by p(x|z) — the two
    estimates of log p(x) agree, where the untrained encoder's would be far off."""
    run = tmp_path / "mcem"
    assert call(["train", "--algorithm", "mcem", "--latent-dim", "2", *TINY, "--step-size", "0.02", "--out", run]) == 0
    code, out, err = run_cli(
        capsys, ["evaluate", run, "--num-points", "40", "--nll", "--k", "20000", "--hmc", "--json"]
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["test_bound"] is None and result["encoder_trained"] is False
    assert result["log_likelihood_prior_mixture"] == 1.0
    assert abs(result["hmc_log_likelihood"] - result["log_likelihood"]) < 1.0, result
    code, out, err = run_cli(capsys, ["evaluate", run, "--num-points", "5"])
    assert code == 0 and "lower bound: none (the run trained no encoder)" in out, (out, err)
    from aevb.experiments import plan

    starts = {run.algorithm: run.extra_metrics.initial for run in plan("fig3", budget=1000, data_dir=None)}
    assert starts == {"aevb": "encoder", "wake-sleep": "encoder", "mcem": "importance-resampled"}
