"""Exact resume: a run continued from any of its checkpoints ends with the parameters, bit for bit,
of the same run never interrupted — with the step-size selection of §5 in it, mid-epoch, for both
engines, for posteriors of §2.4 drawn by other samplers (torch's Gamma, the multivariate t) and for the
baselines (MCEM carries per-datapoint chains in its state)."""

from __future__ import annotations

import copy
import json
import math
import random

import pytest
import torch

from aevb import VAE, ModelConfig
from aevb.errors import TrainingInterrupted
from aevb.training import TrainConfig, Trainer
from aevb.training.algorithms import make_algorithm


def _train(data, config, algorithm, model_options=None, **fit_options):
    model = VAE(ModelConfig(data_dim=data.shape[1], latent_dim=3, hidden_units=16, **(model_options or {})))
    trainer = Trainer(model, data, config, algorithm=make_algorithm(algorithm, config))
    result = trainer.fit(**fit_options)
    return model, result


@pytest.mark.parametrize(
    "algorithm, options, model_options",
    [
        ("aevb", {"engine": "fused", "binarize": "dynamic"}, None),
        ("aevb", {"engine": "autograd", "estimator": "IWAE", "num_samples": 2}, None),
        ("aevb", {"estimator": "B"}, {"posterior": "laplace", "prior": "laplace"}),  # §2.4 families:
        ("aevb", {"estimator": "A"}, {"posterior": "gamma", "prior": "gamma"}),  # torch's Gamma sampler
        ("aevb", {"estimator": "A"}, {"posterior": "multivariate-student-t", "prior": "gaussian"}),
        ("wake-sleep", {}, None),
        ("mcem", {"step_size": 0.01}, None),
    ],
)
def test_resuming_from_any_checkpoint_reproduces_the_uninterrupted_run(algorithm, options, model_options):
    torch.manual_seed(0)
    data = torch.rand(230, 12)  # 230 rows, M = 20: epochs end mid-minibatch
    config = TrainConfig(
        batch_size=20, max_samples=2100, selection_steps=8, first_eval=400, evals_per_decade=4, seed=4, **options
    )
    reference, expected = _train(data, config, algorithm, model_options)

    checkpoints = []
    _train(
        data,
        config,
        algorithm,
        model_options,
        checkpoint_every=7,
        on_checkpoint=lambda state: checkpoints.append(copy.deepcopy(state)),
    )
    assert len(checkpoints) > 10
    for state in random.Random(1).sample(checkpoints, 4) + [checkpoints[0], checkpoints[-2]]:
        model, result = _train(data, config, algorithm, model_options, resume=state)
        for name, value in reference.state_dict().items():
            assert torch.equal(model.state_dict()[name], value), (state.samples, name)
        assert [m.samples for m in result.history] == [m.samples for m in expected.history]
        bounds = torch.tensor([m.minibatch_bound for m in result.history])
        assert torch.allclose(
            bounds, torch.tensor([m.minibatch_bound for m in expected.history]), rtol=0, atol=0, equal_nan=True
        )  # NaN for MCEM, which has no bound
        assert result.step_size == expected.step_size


def test_checkpoints_on_disk_round_trip_to_the_same_end(tmp_path):
    from aevb.training.checkpoints import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    data = torch.rand(230, 12)
    config = TrainConfig(batch_size=20, max_samples=1500, step_size=0.05, first_eval=400, evals_per_decade=4, seed=2)
    reference, _ = _train(data, config, "aevb")
    saved = []

    def checkpoint(state):
        if state.steps in (13, 40):
            saved.append(save_checkpoint(tmp_path / f"run{state.steps}", state, keep=1))

    _train(data, config, "aevb", checkpoint_every=1, on_checkpoint=checkpoint)
    assert len(saved) == 2
    for path in saved:
        model, _ = _train(data, config, "aevb", resume=load_checkpoint(path.parent.parent))
        assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.state_dict().items())


ARGS = [
    "--hidden-units",
    "16",
    "--latent-dim",
    "3",
    "--max-samples",
    "40000",
    "--step-size",
    "0.02",
    "--threads",
    "1",
    "--checkpoint-every",
    "15",
    "--eval-subset",
    "200",
    "--no-progress",
]


def _cli(*args, **options):
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "aevb.cli", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,
    )


def test_a_run_killed_again_and_again_resumes_to_the_uninterrupted_parameters(tmp_path):
    import signal
    import time

    from safetensors.torch import load_file

    reference = _cli(*ARGS, "--out", str(tmp_path / "reference"))
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    run = tmp_path / "run"
    latest = run / "checkpoints" / "latest.json"
    process, rng, kill_points = _cli(*ARGS, "--out", str(run)), random.Random(7), []
    for _ in range(3):  # kill at a random moment after the next checkpoint, resume, again
        seen = latest.read_text() if latest.exists() else None
        deadline = time.time() + 120
        while (not latest.exists() or latest.read_text() == seen) and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.15))
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kill_points.append(json.loads(latest.read_text())["latest"])
        if (run / "summary.json").exists():  # killed after it had finished
            break
        process = _cli("--resume", str(run), "--threads", "1", "--no-progress")
    assert process.wait(timeout=300) in (0, -signal.SIGKILL), process.stderr.read()
    assert len(kill_points) == 3 and len(set(kill_points)) == 3, kill_points
    expected, got = load_file(tmp_path / "reference" / "model.safetensors"), load_file(run / "model.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert (run / "metrics.jsonl").read_text().count("\n") == (
        tmp_path / "reference" / "metrics.jsonl"
    ).read_text().count("\n")
    if process.returncode == 0:  # a finished run keeps its final checkpoint alone, to be extended from
        assert [path.name for path in (run / "checkpoints").glob("step-*")] == [
            json.loads(latest.read_text())["latest"]
        ]


def test_sigterm_saves_a_checkpoint_and_says_how_to_continue(tmp_path):
    import signal
    import time

    run = tmp_path / "run"
    process = _cli(*ARGS, "--out", str(run))
    deadline = time.time() + 60
    while not (run / "checkpoints" / "latest.json").exists() and time.time() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    message = process.stderr.read()
    assert "checkpoint saved" in message and f"aevb train --resume {run}" in message
    assert "Traceback" not in message
    done = _cli("--resume", str(run), "--threads", "1", "--no-progress")
    assert done.wait(timeout=300) == 0 and (run / "model.safetensors").exists()


def test_a_stop_during_the_step_size_trials_comes_at_once_and_the_run_started_again_is_the_same():
    """§5's trials are minutes of a long run: a stop request there is honoured at the next trial
    step (nothing to save: the trials restart), and the run trained afterwards is the run."""
    torch.manual_seed(0)
    data = (torch.rand(300, 20) < 0.3).float()
    config = TrainConfig(max_samples=3000, batch_size=50, selection_steps=10, eval_subset=100)
    calls = []

    def stop_on_fifth_call():
        calls.append(1)
        return len(calls) >= 5

    with pytest.raises(TrainingInterrupted) as stopped:
        _train(data, config, "aevb", stop_requested=stop_on_fifth_call)
    assert stopped.value.samples == 0 and len(calls) == 5  # (the first candidate's fifth step of ten)
    restarted, _ = _train(data, config, "aevb")
    reference, result = _train(data, config, "aevb")
    assert [t.step_size for t in result.step_size_trials] == [0.01, 0.02, 0.1]
    assert all(torch.equal(v, restarted.state_dict()[k]) for k, v in reference.state_dict().items())


def test_sigterm_while_the_step_size_is_chosen_stops_at_once_and_says_nothing_was_lost(tmp_path):
    import signal
    import time

    run = tmp_path / "run"
    args = [a for a in ARGS if a not in ("--step-size", "0.02")] + ["--selection-steps", "100000"]
    process = _cli(*args, "--max-samples", "40000000", "--out", str(run))
    deadline = time.time() + 60
    while not (run / "config.json").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(3)  # well inside the trials: 3 × 10⁵ steps
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    message = process.stderr.read()
    assert "nothing trained yet" in message and f"aevb train --resume {run}" in message, message
    assert "Traceback" not in message and not (run / "checkpoints" / "latest.json").exists()


# ------------------------------------------------------------------------------ numeric guards


def _poisoned(monkeypatch, bad_steps):
    """Make the fused step see a NaN on the given step numbers (1-based): in a gradient after the
    step, or — when the step applies the optimiser itself (native kernels) — in its data."""
    from aevb.engines import fused

    original, calls = fused.FusedStep.__call__, {"n": 0}

    def call(self, x, noise=None, optimizer=None):
        calls["n"] += 1
        bad = calls["n"] in bad_steps
        if bad and optimizer is not None:
            x = x.clone()
            x[0, 0] = float("nan")
        result = original(self, x, noise, optimizer=optimizer)
        if bad and optimizer is None:
            self.parameters[0].grad[0, 0] = float("nan")
        return result

    monkeypatch.setattr(fused.FusedStep, "__call__", call)
    return calls


@pytest.mark.parametrize("native_kernels", ["1", "0"])
def test_a_nan_gradient_is_skipped_counted_and_never_reaches_the_parameters(monkeypatch, native_kernels):
    monkeypatch.setenv("AEVB_NATIVE", native_kernels)
    torch.manual_seed(0)
    data = torch.rand(230, 12)
    config = TrainConfig(batch_size=20, max_samples=1200, step_size=0.05, first_eval=400, evals_per_decade=4)
    _poisoned(monkeypatch, {5, 9})
    model, result = _train(data, config, "aevb")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert result.history[-1].skipped_steps == 2 and result.history[-1].rollbacks == 0
    assert all(math.isfinite(m.minibatch_bound) for m in result.history)


def test_an_interval_of_bad_steps_rolls_back_with_half_the_step_size_then_gives_up(monkeypatch):
    from aevb.errors import AevbError

    torch.manual_seed(0)
    data = torch.rand(230, 12)
    config = TrainConfig(batch_size=20, max_samples=1200, step_size=0.05, first_eval=400, evals_per_decade=4)
    _poisoned(monkeypatch, set(range(30, 46)))  # most of the interval 562 → 1000 samples (steps 30-50)
    with pytest.warns(RuntimeWarning, match="step size 0.025"):
        model, result = _train(data, config, "aevb")
    assert result.history[-1].rollbacks == 1 and result.step_size == 0.025
    assert [m.samples for m in result.history] == sorted({m.samples for m in result.history})

    _poisoned(monkeypatch, set(range(1, 10_000)))  # every step: three rollbacks, then a clear error
    with pytest.warns(RuntimeWarning), pytest.raises(AevbError, match="after 3 rollbacks halving the step size"):
        _train(data, config, "aevb")


def test_a_damaged_checkpoint_is_refused_with_one_line(tmp_path):
    import json as json_module
    import subprocess
    import sys

    run = tmp_path / "run"
    process = _cli(*ARGS, "--minibatches", "shuffled", "--out", str(run))  # (a permutation to cut below)
    latest = run / "checkpoints" / "latest.json"
    import time

    deadline = time.time() + 60
    while not latest.exists() and time.time() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    name = json_module.loads(latest.read_text())["latest"]
    for other in (run / "checkpoints").glob("step-*"):
        if other.name != name:
            import shutil

            shutil.rmtree(other)
    fields_path = run / "checkpoints" / name / "state.json"
    fields = json_module.loads(fields_path.read_text())
    damages = {
        "missing field": {k: v for k, v in fields.items() if k != "samples"},
        "other format": fields | {"format_version": 99},
        "other data size": fields,  # with the permutation cut below
    }
    tensors_path = run / "checkpoints" / name / "state.safetensors"
    original_tensors = tensors_path.read_bytes()
    for what, damaged in damages.items():
        fields_path.write_text(json_module.dumps(damaged))
        tensors_path.write_bytes(original_tensors)
        if what == "other data size":
            from safetensors.torch import load_file, save_file

            tensors = load_file(tensors_path)
            tensors["order"] = tensors["order"][:-5]
            save_file(tensors, tensors_path)
        done = subprocess.run(
            [sys.executable, "-m", "aevb.cli", "train", "--resume", str(run), "--threads", "1", "--no-progress"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, (what, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, (what, done.stderr)
    tensors_path.write_bytes(b"\x00garbage")
    fields_path.write_text(json_module.dumps(fields))
    done = subprocess.run(
        [sys.executable, "-m", "aevb.cli", "train", "--resume", str(run), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "no readable checkpoint" in done.stderr


def test_a_run_stopped_on_the_step_that_reaches_an_evaluation_point_evaluates_it_when_resumed():
    """The stop is honoured before the point's evaluation; resuming evaluates it first, so nothing
    is lost and the run ends as the uninterrupted one, bit for bit (the last point too)."""
    torch.manual_seed(0)
    data = torch.rand(240, 12)  # whole minibatches: step n has seen 20 n samples
    config = TrainConfig(batch_size=20, max_samples=2000, step_size=0.02, first_eval=400, evals_per_decade=4, seed=4)
    reference, expected = _train(data, config, "aevb")
    points = [m.samples for m in expected.history]
    for stop_at in (points[1], points[-1]):  # a point midway, and the last one
        states = []

        def stop_requested(calls=[0]):
            calls[0] += 1
            return calls[0] * 20 == stop_at

        with pytest.raises(TrainingInterrupted):
            _train(data, config, "aevb", stop_requested=stop_requested, on_checkpoint=states.append)
        assert states[-1].samples == stop_at and all(m.samples < stop_at for m in states[-1].history)
        model, result = _train(data, config, "aevb", resume=copy.deepcopy(states[-1]))
        assert [m.samples for m in result.history] == points
        assert [m.train_bound for m in result.history] == [m.train_bound for m in expected.history]
        for name, value in reference.state_dict().items():
            assert torch.equal(model.state_dict()[name], value), (stop_at, name)


def test_a_step_size_selection_that_would_use_the_whole_budget_is_shortened_and_the_run_evaluated():
    torch.manual_seed(0)
    data = torch.rand(230, 12)
    config = TrainConfig(batch_size=20, max_samples=160, selection_steps=8, first_eval=100, seed=4)
    _, result = _train(data, config, "aevb")
    # 7 trial steps per candidate (140 samples): the run then trains from the start to its points
    assert [m.samples for m in result.history] == [100, 140, 160]
    assert result.history[-1].steps == 8 and all(math.isfinite(m.minibatch_bound) for m in result.history)
