"""Issue 30, item 3: the best model by validation bound kept in the run and loadable, early stopping
(library, resume, command line), and a run extended to a larger budget equal to the run at that
budget from the start."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from test_cli import assert_usage_error, call, run_cli

import aevb
from aevb import VAE, ModelConfig
from aevb.errors import AevbError
from aevb.runs import DataConfig, RunOptions, RunSpec, load_data, load_run, resume_run, train_run
from aevb.training import TrainConfig, Trainer
from aevb.training.checkpoints import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

#: A model that overfits 100 training points within a few thousand samples: its validation bound
#: rises, then falls and wavers, so that early stopping has something to stop.
OVERFITTING = dict(batch_size=20, max_samples=30000, step_size=0.05, first_eval=500, evals_per_decade=10, seed=1)
PATIENCE = 2


@pytest.fixture(scope="module")
def overfitting_data():
    data = load_data(DataConfig())
    return data.train[:100], data.valid[:300]


def _fit(data, config: TrainConfig, **fit_options):
    train, valid = data
    model = VAE(ModelConfig(data_dim=784, latent_dim=5, hidden_units=100))
    result = Trainer(model, train, config, valid=valid, threads=1).fit(**fit_options)
    return model, result


def _expected_stop(valid_bounds: list[float], patience: int) -> tuple[int, int]:
    """The rule, on a history: (index of the point where `patience` points in a row brought no
    higher bound, index of the best point before it)."""
    best, since = 0, 0
    for index, value in enumerate(valid_bounds[1:], 1):
        if value > valid_bounds[best]:
            best, since = index, 0
        else:
            since += 1
            if since == patience:
                return index, best
    raise AssertionError(f"the validation bound never stalled for {patience} points: {valid_bounds}")


def test_early_stopping_stops_the_run_where_its_history_says_with_the_same_parameters(overfitting_data):
    snapshots = []
    _, full = _fit(
        overfitting_data, TrainConfig(**OVERFITTING), on_checkpoint=lambda state: snapshots.append(copy.deepcopy(state))
    )
    valid_bounds = [metrics.valid_bound for metrics in full.history]
    stop, best = _expected_stop(valid_bounds, PATIENCE)
    assert stop < len(full.history) - 1  # (it stops before the budget, or the test shows nothing)
    assert full.best_samples == full.history[max(range(len(valid_bounds)), key=valid_bounds.__getitem__)].samples

    model, stopped = _fit(overfitting_data, TrainConfig(**OVERFITTING, early_stopping=PATIENCE))
    # Evaluations draw from a forked generator: the stopped run is the full run up to its stop.
    assert [m.valid_bound for m in stopped.history] == valid_bounds[: stop + 1]
    assert stopped.stopped_early_at == full.history[stop].samples and full.stopped_early_at is None
    assert stopped.best_samples == full.history[best].samples
    assert stopped.best_valid_bound == valid_bounds[best]
    at_stop = next(state for state in snapshots if state.samples == full.history[stop].samples and state.history)
    assert all(torch.equal(value, at_stop.model[name]) for name, value in model.state_dict().items())


def test_a_run_resumed_after_its_best_point_stops_early_where_the_uninterrupted_one_does(overfitting_data, tmp_path):
    config = TrainConfig(**OVERFITTING, early_stopping=PATIENCE)
    states = []
    reference, expected = _fit(overfitting_data, config, on_checkpoint=lambda s: states.append(copy.deepcopy(s)))
    # the checkpoint one point after the best: the patience counter is 1 in it, and must stay so on disk
    counting = next(s for s in states if s.evaluations_since_best == 1 and s.history[-1].samples == s.samples)
    save_checkpoint(tmp_path, counting)
    restored = load_checkpoint(tmp_path)
    assert (restored.best_valid_bound, restored.best_samples, restored.evaluations_since_best) == (
        counting.best_valid_bound,
        counting.best_samples,
        1,
    )
    model, resumed = _fit(overfitting_data, config, resume=restored)
    assert resumed.stopped_early_at == expected.stopped_early_at and resumed.best_samples == expected.best_samples
    assert all(torch.equal(value, reference.state_dict()[name]) for name, value in model.state_dict().items())


def test_early_stopping_without_a_validation_split_is_refused_in_one_line(overfitting_data, tmp_path, capsys):
    train, _ = overfitting_data
    model = VAE(ModelConfig(data_dim=784, latent_dim=5, hidden_units=10))
    with pytest.raises(AevbError, match="`early_stopping` needs a validation split"):
        Trainer(model, train, TrainConfig(early_stopping=3))
    code, out, err = run_cli(
        capsys, ["train", "--merge-valid", "--early-stopping", "3", "--max-samples", "2000", "--out", tmp_path / "r"]
    )
    assert_usage_error(code, out, err)
    assert "--early-stopping needs a validation split" in err and not (tmp_path / "r").exists()


def _spec(**training) -> RunSpec:
    return RunSpec.from_settings(
        {
            "data": {"train_limit": 100},
            "model": {"latent_dim": 5, "hidden_units": 100},
            "training": {**OVERFITTING, "eval_subset": 300, **training},
            "run": {"threads": 1, "progress": False},
        }
    )


def test_a_run_keeps_its_best_model_which_is_the_run_trained_to_that_point(tmp_path, capsys):
    run = train_run(_spec(early_stopping=PATIENCE), tmp_path / "stopped")
    summary = json.loads((run / "summary.json").read_text())
    best = json.loads((run / "best" / "best.json").read_text())
    stopped_at = summary["stopped_early_at"]
    assert summary["stopped"] == f"early stopped at {stopped_at:,} samples" and summary["samples"] == stopped_at
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert best["samples"] == summary["best_samples"] < stopped_at
    assert best["valid_bound"] == max(m["valid_bound"] for m in metrics) == summary["best_valid_bound"]
    # A run whose budget is the best point's samples ends with the best model's weights.
    shorter = train_run(_spec(max_samples=best["samples"]), tmp_path / "shorter")
    expected = load_file(shorter / "model.safetensors")
    assert load_file(run / "best" / "model.safetensors").keys() == expected.keys()
    for loaded in (aevb.load(run, best=True), aevb.load(run, checkpoint="best"), load_run(run, "cpu", "best")[0]):
        assert all(torch.equal(value.cpu(), expected[name]) for name, value in loaded.state_dict().items())
    assert load_run(run, "cpu", best=True)[1]["best"] == best
    # --checkpoint best wherever a run is read; bare --checkpoint still the latest checkpoint's
    code, out, err = run_cli(capsys, ["evaluate", run, "--checkpoint", "best", "--num-points", "20", "--json"])
    assert code == 0 and json.loads(out)["best_samples"] == best["samples"], err
    code, out, err = run_cli(capsys, ["evaluate", run, "--checkpoint", "--num-points", "20", "--json"])
    assert code == 0 and json.loads(out)["checkpoint_samples"] == stopped_at, err  # (a finished run's final state)
    code, out, err = run_cli(capsys, ["sample", run, "--checkpoint", "best", "--num", "4"])
    assert code == 0 and (run / "samples-seed0-best.png").is_file(), err
    assert not (run / "evaluations.jsonl").exists()  # only the final model's evaluations are kept
    code, out, err = run_cli(capsys, ["evaluate", "--checkpoint", run])  # (its value is optional)
    assert_usage_error(code, out, err)
    assert "expected one of latest, best or nothing" in err and "RUN_DIR goes before this option" in err
    with pytest.raises(AevbError, match="`best` asks for the best model and `checkpoint` for the latest"):
        aevb.load(run, checkpoint=True, best=True)
    with pytest.raises(AevbError, match="`checkpoint` must be one of final, latest, best"):
        aevb.load(run, checkpoint="newest")


def test_asking_for_the_best_model_of_a_run_without_a_validation_split_names_why(tmp_path, capsys):
    run = tmp_path / "merged"
    assert call(["train", "--merge-valid", "--hidden-units", "8", "--max-samples", "1000", "--step-size", "0.02",
                 "--no-progress", "--out", run]) == 0  # fmt: skip
    assert not (run / "best").exists()
    code, out, err = run_cli(capsys, ["sample", run, "--checkpoint", "best"])
    assert_usage_error(code, out, err)
    assert "keeps no best model: it trained without a validation split" in err


# ---------------------------------------------------------------- extending a finished run

EXTEND = ["--hidden-units", "16", "--latent-dim", "3", "--selection-steps", "5", "--eval-subset", "200"]
RUNNING = ["--no-progress", "--threads", "1"]


def test_a_finished_run_extended_is_the_run_at_the_larger_budget(tmp_path, capsys):
    # 12,000 is no evaluation point of a 20,000-sample run: the extended run measures one more point
    # there, which must change nothing of its training. The step size is chosen (§5), not given.
    one = tmp_path / "one"
    assert call(["train", *EXTEND, *RUNNING, "--max-samples", "20000", "--out", one]) == 0
    extended = tmp_path / "extended"
    assert call(["train", *EXTEND, *RUNNING, "--max-samples", "12000", "--out", extended]) == 0
    assert (extended / "checkpoints" / "latest.json").is_file()  # a finished run keeps its final state
    code, out, err = run_cli(capsys, ["train", "--resume", extended, "--max-samples", "20000", *RUNNING])
    assert code == 0 and "20,000 samples" in out, err
    expected, got = load_file(one / "model.safetensors"), load_file(extended / "model.safetensors")
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    lines = {
        name: [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        for name, run in (("one", one), ("extended", extended))
    }
    assert [m["samples"] for m in lines["extended"]] == sorted({m["samples"] for m in lines["one"]} | {12000})
    for key in ("samples", "train_bound", "valid_bound", "step_size", "steps"):
        assert lines["extended"][-1][key] == lines["one"][-1][key], key
    config = {
        name: json.loads((run / "config.json").read_text()) for name, run in (("one", one), ("extended", extended))
    }
    assert config["extended"]["training"] == config["one"]["training"]
    summary = json.loads((extended / "summary.json").read_text())
    assert (
        summary["samples"] == 20000
        and summary["step_size"] == json.loads((one / "summary.json").read_text())["step_size"]
    )
    # twice the same budget: nothing to extend
    code, out, err = run_cli(capsys, ["train", "--resume", extended, "--max-samples", "20000", *RUNNING])
    assert_usage_error(code, out, err)
    assert "--max-samples 20,000 does not extend" in err and "trains to 20,000 samples already" in err
    code, out, err = run_cli(capsys, ["train", "--resume", extended])
    assert_usage_error(code, out, err)
    assert "is a finished run; nothing to resume (a larger --max-samples extends it)" in err


@pytest.mark.parametrize(
    "settings, extend_to, words",
    [
        (["--step-size", "0.02", "--max-samples", "3000", "--schedule", "iwae"], "6000", "--schedule 'iwae'"),
        (["--max-samples", "3000", "--selection-steps", "200"], "6000", "--selection-steps 29, shortened"),
        (["--step-size", "0.02", "--max-samples", "3050"], "6000", "cut short to stop at 3,050 samples"),
        (["--step-size", "0.02", "--epochs", "0.2"], "6000", "--epochs 0.2 (1,800 samples)"),
        (["--step-size", "0.02", "--max-samples", "3000"], "2000", "--max-samples 2,000 does not extend"),
    ],
)
def test_an_extension_that_would_not_be_the_run_at_the_larger_budget_is_refused(
    tmp_path, capsys, settings, extend_to, words
):
    run = tmp_path / "run"
    assert call(["train", "--hidden-units", "8", "--latent-dim", "2", *settings, *RUNNING, "--out", run]) == 0
    before = _files(run)
    code, out, err = run_cli(capsys, ["train", "--resume", run, "--max-samples", extend_to])
    assert_usage_error(code, out, err)
    assert words in err
    assert _files(run) == before  # nothing of the finished run touched


def _files(run):
    """Every file of ``run`` but its lock (taken and released by the refused command), with its mtime."""
    return sorted((path.relative_to(run), path.stat().st_mtime_ns) for path in run.rglob("*") if path.name != ".lock")


def test_an_early_stopped_run_and_one_without_its_final_checkpoint_are_not_extended(tmp_path):
    stopped = train_run(_spec(early_stopping=PATIENCE), tmp_path / "stopped")
    with pytest.raises(AevbError, match=r"stopped early at .* \(no higher validation bound in 2 evaluation points"):
        resume_run(stopped, RunOptions(threads=1, progress=False), max_samples=60000)
    older = tmp_path / "older"
    shutil.copytree(stopped, older)
    shutil.rmtree(older / "checkpoints")
    with pytest.raises(AevbError, match="finished without keeping its final checkpoint"):
        resume_run(older, RunOptions(threads=1, progress=False), max_samples=60000)


def test_an_extension_interrupted_resumes_to_the_larger_budget_and_older_checkpoints_still_resume(
    tmp_path, monkeypatch
):
    from aevb.runs.layout import configuration_id
    from aevb.runs.process import StopOnSignal

    settings = [*EXTEND, "--step-size", "0.02", *RUNNING]
    one, run = tmp_path / "one", tmp_path / "run"
    assert call(["train", *settings, "--max-samples", "9000", "--out", one]) == 0
    assert call(["train", *settings, "--max-samples", "3000", "--out", run]) == 0
    checks = {"n": 0}

    def stop_after_40_steps(self):
        checks["n"] += 1
        return checks["n"] > 40

    with monkeypatch.context() as patch:  # as SIGTERM stops it: a checkpoint at 7,000 samples
        patch.setattr(StopOnSignal, "__call__", stop_after_40_steps)
        assert call(["train", "--resume", run, "--max-samples", "9000", *RUNNING]) == 130
    assert not (run / "summary.json").exists()
    assert json.loads((run / "config.json").read_text())["training"]["max_samples"] == 9000
    # A checkpoint of an earlier aevb names the settings' identity with the budget: still this run's.
    (state_file,) = (run / "checkpoints").glob("step-00000007*/state.json")
    fields = json.loads(state_file.read_text())
    fields["configuration"] = configuration_id(json.loads((run / "config.json").read_text()), with_budget=True)
    state_file.write_text(json.dumps(fields))
    assert call(["train", "--resume", run, *RUNNING]) == 0
    expected, got = load_file(one / "model.safetensors"), load_file(run / "model.safetensors")
    assert all(torch.equal(expected[name], got[name]) for name in expected)
