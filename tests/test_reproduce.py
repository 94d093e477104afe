"""`aevb reproduce`: the runs behind each figure, resumable, with figure and numbers written."""

import csv
import dataclasses
import json
import re

import matplotlib.image
import pytest
import torch

from aevb.cli import main
from aevb.experiments import fig2, plan
from aevb.runs import ModelSpec


def test_figure_2_plan_is_the_papers_grid():
    runs = plan("fig2", budget=10**8, data_dir=None)
    panels = {(r.tags["dataset"], r.tags["latent_dim"]) for r in runs}
    assert panels == {("mnist", n) for n in (3, 5, 10, 20, 200)} | {("frey", n) for n in (2, 5, 10, 20)}
    assert {r.algorithm for r in runs} == {"aevb", "wake-sleep"} and len(runs) == 18
    assert all(r.train.max_samples == 10**8 and r.train.batch_size == 100 and r.track_test for r in runs)


def test_figure_3_plan_is_the_papers_grid():
    runs = plan("fig3", budget=10**8, data_dir=None)
    assert {(r.tags["train_size"], r.algorithm) for r in runs} == {
        (n, m) for n in (1000, 50000) for m in ("aevb", "wake-sleep", "mcem")
    }
    assert all(r.model == ModelSpec(latent_dim=3, hidden_units=100) for r in runs)
    assert all(r.data.train_limit == r.tags["train_size"] for r in runs)
    # App. D's chains start at the encoder, except for MCEM, which trains none (see the HMC estimator)
    assert {r.algorithm: r.extra_metrics.initial for r in runs} == {
        "aevb": "encoder",
        "wake-sleep": "encoder",
        "mcem": "importance-resampled",
    }


def test_fig2_end_to_end_and_resume(shared_data, tmp_path, capsys):
    out = tmp_path / "fig2"
    argv = [
        "reproduce",
        "fig2",
        "--budget",
        "2000",
        "--datasets",
        "frey",
        "--latent-dims",
        "2",
        "--data-dir",
        str(shared_data),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    for name in ("fig2.png", "fig2.csv", "fig2.json", "frey-z2-aevb/summary.json", "frey-z2-wake-sleep/summary.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "fig2.csv")))
    assert {row["method"] for row in rows} == {"aevb", "wake-sleep"}
    assert all(row["test_bound"] not in ("", "None") for row in rows)
    numbers = json.loads((out / "fig2.json").read_text())
    final = numbers["final"]
    assert final[0]["dataset"] == "frey" and "aevb_beats_wake_sleep" in final[0]
    assert numbers["milestones"] == []  # 2000 samples: no power of ten among the evaluation points
    # A second call finds every run complete and trains nothing.
    stamp = (out / "frey-z2-aevb" / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0
    assert "2 of 2 runs already complete" in capsys.readouterr().err
    assert (out / "frey-z2-aevb" / "model.safetensors").stat().st_mtime_ns == stamp


def test_milestones_are_the_bounds_at_powers_of_ten(tmp_path):
    runs = plan("fig2", budget=10**6, data_dir=None, datasets=("mnist",), latent_dims=(3,))
    for spec, offset in zip(runs, (0.0, -10.0)):
        (tmp_path / spec.name).mkdir()
        lines = [
            {"samples": n, "train_bound": -100.0 - n / 1e5 + offset, "test_bound": -101.0 + offset}
            for n in (31623, 100095, 316228, 1000000)
        ]
        (tmp_path / spec.name / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows = fig2.milestone_table(runs, tmp_path)
    assert [(row["method"], row["samples"], row["train_bound"]) for row in rows] == [
        ("aevb", 100095, -101.00095),
        ("aevb", 1000000, -110.0),
        ("wake-sleep", 100095, -111.00095),
        ("wake-sleep", 1000000, -120.0),
    ]
    assert all(row["dataset"] == "mnist" and row["latent_dim"] == 3 for row in rows)


def test_an_interrupted_run_is_redone(shared_data, tmp_path):
    out = tmp_path / "fig4"
    argv = ["reproduce", "fig4", "--budget", "1500", "--data-dir", str(shared_data), "--out", str(out)]
    assert main(argv) == 0
    # config.json records the command that trains it again, with the run's name (and so its model card)
    recorded = json.loads((out / "frey-z2-aevb" / "config.json").read_text())["command"]
    assert recorded == f"aevb reproduce fig4 --budget 1500 --data-dir {shared_data} --out {out}  # run frey-z2-aevb"
    (out / "frey-z2-aevb" / "summary.json").unlink()  # as if killed before it finished
    (out / "fig4.png").unlink()
    assert main(argv) == 0
    assert (out / "frey-z2-aevb" / "summary.json").is_file() and (out / "fig4.png").is_file()
    numbers = json.loads((out / "fig4.json").read_text())
    assert numbers["run"]["samples"] == 1500 and len(numbers["grid_z"]) == 20
    # each face pixel is drawn as 2×2 screen pixels (20×20 faces of 28×20 under a title)
    image = matplotlib.image.imread(out / "fig4.png")
    faces = image[-2 * 20 * 28 :]
    assert (
        image.shape[1] == 2 * 20 * 20
        and (faces[0::2] == faces[1::2]).all()
        and (faces[:, 0::2] == faces[:, 1::2]).all()
    )


def test_fig3_end_to_end_small(shared_data, tmp_path):
    out = tmp_path / "fig3"
    assert (
        main(
            [
                "reproduce",
                "fig3",
                "--budget",
                "1000",
                "--train-sizes",
                "200",
                "--points",
                "10",
                "--data-dir",
                str(shared_data),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(open(out / "fig3.csv")))
    assert {row["method"] for row in rows} == {"aevb", "wake-sleep", "mcem"}
    assert all(float(row["test_log_likelihood"]) < 0 for row in rows)
    assert (out / "fig3.png").is_file()
    config = json.loads((out / "mnist-n200-mcem" / "config.json").read_text())
    assert config["algorithm"] == "mcem" and config["data"]["train_limit"] == 200


def test_samples_figure(shared_data, tmp_path):
    out = tmp_path / "samples"
    assert (
        main(
            [
                "reproduce",
                "samples",
                "--budget",
                "1000",
                "--latent-dims",
                "2",
                "5",
                "--data-dir",
                str(shared_data),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "samples.png").is_file() and (out / "mnist-z5-aevb" / "model.safetensors").is_file()
    numbers = json.loads((out / "samples.json").read_text())
    assert numbers["mnist-z5-aevb"]["samples"] == 1000 and numbers["mnist-z5-aevb"]["latent_dim"] == 5


@pytest.mark.parametrize(
    "figure, option, takes",
    [
        ("fig3", ["--datasets", "frey"], "--train-sizes, --methods, --points, --mcem-step-size"),
        ("fig4", ["--methods", "mcem"], "none"),
        ("fig2", ["--k", "10"], "--datasets, --latent-dims, --methods"),
        ("nll", ["--latent-dims", "3"], "--models, --k, --points"),
        ("samples", ["--train-sizes", "100"], "--latent-dims"),
    ],
)
def test_an_option_the_figure_does_not_take_is_a_user_error(capsys, tmp_path, figure, option, takes):
    out = tmp_path / "out"
    assert main(["reproduce", figure, *option, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{figure} does not take {option[0]} (its options: {takes})" in err and not out.exists(), err


def test_the_library_names_the_setting_a_figure_does_not_take():
    from aevb.errors import AevbError

    with pytest.raises(AevbError, match="fig4 does not take `latent_dims`"):
        plan("fig4", budget=1000, data_dir=None, latent_dims=[2])
    with pytest.raises(AevbError, match="unknown figure 'fig9'"):
        plan("fig9", budget=1000, data_dir=None)
    assert len(plan("fig4", budget=1000, data_dir=None, latent_dims=None)) == 1  # None: the default


def test_a_value_listed_twice_plans_its_run_once():
    assert [run.name for run in plan("samples", budget=1000, data_dir=None, latent_dims=[2, 2, 5])] == [
        "mnist-z2-aevb",
        "mnist-z5-aevb",
    ]
    assert [run.name for run in plan("nll", budget=0.25, data_dir=None, models=["iwae-vae", "iwae-vae"])] == [
        "iwae-vae"
    ]


def test_an_experiment_that_plans_two_runs_of_one_name_is_refused():
    from aevb.errors import AevbError
    from aevb.experiments import Experiment
    from aevb.experiments.manifolds import manifold_specs

    twice = Experiment(
        "twice",
        "one run, planned twice",
        lambda budget, data_dir, seed=0: 2 * manifold_specs("fig4", budget, data_dir, seed),
        lambda run_specs, out, budget: [],
    )
    with pytest.raises(AevbError, match="twice planned two runs called 'frey-z2-aevb'"):
        twice.plan(1000, None)


def test_an_output_path_that_is_a_file_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    assert main(["reproduce", "fig4", "--budget", "1000", "--out", str(out)]) == 2
    assert f"--out {out} exists and is not a directory" in capsys.readouterr().err
    assert out.read_text() == "mine"


def test_an_unknown_figure_is_a_usage_error():
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "fig9"])
    assert exit_info.value.code == 2


def test_focus_keeps_the_top_of_the_curves():
    from aevb.figures import plt

    figure, ax = plt.subplots()
    ax.plot(range(20), [-500, -400] + [-120 + 20 * i / 17 for i in range(18)])
    fig2.focus_y_axis(ax)
    low, high = ax.get_ylim()
    assert high > -100 and -400 < low < -120
    plt.close(figure)


def test_focus_leaves_out_figure_3s_initial_models():
    """Figure 3's panels: six curves of six points, four of them the untrained model at −541 nats."""
    from aevb.figures import plt

    figure, ax = plt.subplots()
    for first in (-541.0, -541.0, -195.0, -541.0, -541.0, -195.0):
        ax.plot([1e4, 3e4, 1e5, 3e5, 1e6, 3e6], [first, -200.0, -180.0, -160.0, -140.0, -125.0])
    fig2.focus_y_axis(ax, lowest_share=0.2)
    low, high = ax.get_ylim()
    assert -300 < low < -200 and high > -125
    fig2.focus_y_axis(ax)  # the lowest tenth alone would keep them
    assert ax.get_ylim()[0] < -541
    plt.close(figure)


def test_runs_in_parallel_processes(shared_data, tmp_path, capsys):
    out = tmp_path / "fig2"
    assert (
        main(
            [
                "reproduce",
                "fig2",
                "--budget",
                "1000",
                "--datasets",
                "frey",
                "--latent-dims",
                "2",
                "--jobs",
                "2",
                "--data-dir",
                str(shared_data),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "done" in capsys.readouterr().err
    for method in ("aevb", "wake-sleep"):
        summary = json.loads((out / f"frey-z2-{method}" / "summary.json").read_text())
        assert summary["samples"] == 1000


def test_a_reproduction_stopped_mid_run_continues_from_its_checkpoint(shared_data, tmp_path, monkeypatch):
    import functools
    import os
    import signal

    from safetensors.torch import load_file

    import aevb.experiments.runner
    import aevb.runs.fit
    from aevb.runs import RunOptions

    argv = ["reproduce", "fig4", "--budget", "30000", "--data-dir", str(shared_data)]  # beyond the 200 selection steps
    assert main([*argv, "--out", str(tmp_path / "reference")]) == 0  # checkpointing does not change a run

    original, calls = aevb.runs.fit.save_checkpoint, []

    def save_then_terminate(out, state, **options):  # SIGTERM right after the second checkpoint
        path = original(out, state, **options)
        calls.append(state.samples)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return path

    monkeypatch.setattr(aevb.runs.fit, "save_checkpoint", save_then_terminate)
    monkeypatch.setattr(aevb.experiments.runner, "RunOptions", functools.partial(RunOptions, checkpoint_every=7))
    out = tmp_path / "stopped"
    assert main([*argv, "--out", str(out)]) == 128 + signal.SIGTERM
    assert not (out / "frey-z2-aevb" / "summary.json").exists()
    assert (out / "frey-z2-aevb" / "checkpoints" / "latest.json").is_file()
    monkeypatch.setattr(aevb.runs.fit, "save_checkpoint", original)
    assert main([*argv, "--out", str(out)]) == 0
    expected = load_file(tmp_path / "reference" / "frey-z2-aevb" / "model.safetensors")
    got = load_file(out / "frey-z2-aevb" / "model.safetensors")
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_nll_plan_follows_the_iwae_protocol():
    runs = {r.name: r for r in plan("nll", budget=0.01, data_dir=None, device="cpu")}
    assert set(runs) == {"paper-z20", "paper-z50", "iwae-vae", "iwae-k5"}  # k = 50 only where CUDA is
    for run in runs.values():
        assert (run.data.dataset, run.data.pixel_divisor, run.data.merge_valid) == ("mnist", 255.0, True)
        assert run.train.binarize == "dynamic" and run.final.k == 5000 and run.final.points is None
    paper, vae, k5 = runs["paper-z20"], runs["iwae-vae"], runs["iwae-k5"]
    assert (
        paper.train.max_samples == 10**6 and paper.train.optimizer == "adagrad-warmup" and paper.train.step_size is None
    )
    assert paper.model == ModelSpec(latent_dim=20) and runs["paper-z50"].model == ModelSpec(latent_dim=50)
    assert vae.train.max_samples == round(0.01 * 3280 * 60000)
    assert (
        vae.train.optimizer,
        vae.train.step_size,
        vae.train.schedule,
        vae.train.batch_size,
        vae.train.prior_precision,
        vae.train.estimator,
        vae.train.minibatches,
    ) == ("adam", 1e-3, "iwae", 20, 0.0, "B", "shuffled")
    assert vae.model == ModelSpec(latent_dim=50, hidden_units=(200, 200), hidden_layers=2, init="glorot")
    assert (k5.train.estimator, k5.train.num_samples) == ("IWAE", 5)
    assert all(r.train.max_samples == 5000 for r in plan("nll", budget=5000, data_dir=None, device="cpu"))
    assert {r.name for r in plan("nll", budget=0.5, data_dir=None, models=("iwae-k50",))} == {"iwae-k50"}


def test_nll_end_to_end_writes_the_table_and_reuses_finished_work(shared_data, tmp_path, capsys):
    out = tmp_path / "nll"
    argv = [
        "reproduce",
        "nll",
        "--budget",
        "600",
        "--models",
        "iwae-vae",
        "iwae-k5",
        "--k",
        "10",
        "--points",
        "50",
        "--data-dir",
        str(shared_data),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    table = json.loads((out / "nll_binarized_mnist.json").read_text())
    rows = {row["model"]: row for row in table["models"]}
    assert set(rows) == {"iwae-vae", "iwae-k5"}
    for row in rows.values():
        assert row["budget_samples"] == 600 and row["k"] == 10 and row["num_points"] == 50
        assert row["log_likelihood"] > row["test_bound"]  # k = 10 importance samples beat the bound
        assert row["log_likelihood_stderr"] > 0 and row["negative_log_likelihood"] == -row["log_likelihood"]
    assert (rows["iwae-vae"]["published"], rows["iwae-k5"]["published"]) == (86.76, 85.54)
    markdown = (out / "nll_binarized_mnist.md").read_text()
    assert "| iwae-k5: IWAE k = 5" in markdown
    assert (
        "| 600 (0.01, 0.000305%) |" in markdown and "| k = 10, 50 test images |" in markdown
    )  # not "(0," nor k = 5000
    config = json.loads((out / "iwae-vae" / "config.json").read_text())
    assert config["data"]["train_size"] == 60000 and config["data"]["pixel_divisor"] == 255
    # Finished runs are kept; a lost evaluation is redone without training again.
    model_stamp = (out / "iwae-k5" / "model.safetensors").stat().st_mtime_ns
    (out / "iwae-k5" / "nll_evaluation.json").unlink()
    capsys.readouterr()
    assert main(argv) == 0
    assert "1 of 2 runs already complete" in capsys.readouterr().err
    assert (out / "iwae-k5" / "nll_evaluation.json").is_file()
    assert (out / "iwae-k5" / "model.safetensors").stat().st_mtime_ns == model_stamp


@pytest.mark.parametrize(
    "argv, message",
    [
        (["reproduce", "nll", "--models", "vae"], "unknown model 'vae'"),
        (["reproduce", "fig2", "--models", "iwae-vae"], "fig2 does not take --models"),
        (["reproduce", "fig2", "--budget", "0.5"], "whole number of training samples"),
    ],
)
def test_bad_nll_requests_are_one_line_errors(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_an_interrupted_reproduce_names_each_stopped_run(tmp_path, monkeypatch):
    import pickle

    from aevb.errors import TrainingInterrupted
    from aevb.experiments import runner
    from aevb.runs import DataConfig
    from aevb.training import TrainConfig

    def stopped(spec, *args, **kwargs):
        raise TrainingInterrupted(1234, 2)

    monkeypatch.setattr(runner, "_run_one", stopped)
    spec = runner.FigureRun(
        name="mnist-z3-aevb", data=DataConfig("mnist-sample"), model=ModelSpec(), train=TrainConfig(max_samples=10_000)
    )
    with pytest.raises(TrainingInterrupted) as raised:
        runner.run_specs([spec], tmp_path)
    assert str(raised.value) == "interrupted: mnist-z3-aevb at 1,234 samples" and raised.value.signal == 2
    # crossing processes (--jobs): rebuilt with every run's count
    both = TrainingInterrupted(10, 15, {"a": 10, "b": 2_000_000})
    again = pickle.loads(pickle.dumps(both))
    assert (str(again), again.signal, again.runs) == (
        "interrupted: a at 10 samples, b at 2,000,000 samples",
        15,
        {"a": 10, "b": 2_000_000},
    )


def test_progress_lines_give_each_runs_share_speed_and_time_left(tmp_path, monkeypatch):
    """Read from the runs' newest checkpoints: samples done of the total, the speed since the last
    line and the time left at it; complete runs count whole, untouched ones wait."""
    from aevb.runs import progress_report as run_progress

    newest = {"a": ("step-000000100", 1_000), "b": None}
    monkeypatch.setattr(run_progress, "newest_checkpoint", lambda run_dir: newest[run_dir.name])
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "summary.json").write_text("{}")
    now = [0.0]
    runs = run_progress.RunsProgress(
        {"a": 10_000, "b": 5_000, "done": 7}, tmp_path, clock=lambda: now[0], scored=lambda name: False
    )
    assert runs.done() == 1_000 + 0 + 7
    assert (
        runs.report()
        == "progress: 1 of 3 runs not started; a 1,000 of 10,000 samples (10.0%); done trained, being scored"
    )
    now[0] = 600.0
    newest["a"] = ("step-000000700", 7_000)
    newest["b"] = ("step-000000001", 50)
    assert runs.report() == (
        "progress: a 7,000 of 10,000 samples (70.0%), 10 samples/s, 5 min left; "
        "b 50 of 5,000 samples (1.0%), 0.083 samples/s, 16.5 h left; done trained, being scored"
    )
    now[0] = 1200.0
    newest["a"] = None  # being replaced: the last value read stands
    runs.scored = lambda name: True
    assert runs.report() == (
        "progress: 1 of 3 runs trained; a 7,000 of 10,000 samples (70.0%), no progress "
        "since the last report; b 50 of 5,000 samples (1.0%), no progress since the last report"
    )


def test_a_run_that_starts_over_does_not_count_the_checkpoints_it_replaces(tmp_path, monkeypatch):
    from aevb.runs import progress_report as run_progress

    newest = {"a": ("step-000000900", 9_000)}
    monkeypatch.setattr(run_progress, "newest_checkpoint", lambda run_dir: newest[run_dir.name])
    runs = run_progress.RunsProgress({"a": 10_000}, tmp_path, fresh={"a"})
    assert runs.done() == 0
    newest["a"] = ("step-000000010", 100)
    assert runs.done() == 100


def test_the_newest_checkpoint_is_read_without_its_tensors(tmp_path):
    import os
    import signal

    from aevb.errors import TrainingInterrupted
    from aevb.runs import RunOptions, RunSpec, train_run
    from aevb.training import TrainConfig
    from aevb.training.checkpoints import load_checkpoint, newest_checkpoint

    assert newest_checkpoint(tmp_path / "none") is None
    with pytest.raises(TrainingInterrupted):
        spec = RunSpec(
            model=ModelSpec(latent_dim=2, hidden_units=8),
            training=TrainConfig(max_samples=3000, selection_steps=4, eval_subset=100, first_eval=500),
            run=RunOptions(progress=False),
        )
        train_run(spec, tmp_path / "r", on_metrics=lambda metrics: os.kill(os.getpid(), signal.SIGINT))
    name, samples = newest_checkpoint(tmp_path / "r")
    assert samples == load_checkpoint(tmp_path / "r").samples and (tmp_path / "r" / "checkpoints" / name).is_dir()


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_reproduction_without_a_terminal_logs_its_progress_while_the_runs_train(tmp_path, jobs):
    from aevb.experiments import runner
    from aevb.runs import DataConfig
    from aevb.training import TrainConfig

    specs = [
        runner.FigureRun(
            name=name,
            data=DataConfig("mnist-sample"),
            model=ModelSpec(latent_dim=2, hidden_units=8),
            train=TrainConfig(max_samples=6_000, step_size=0.02, eval_subset=100, first_eval=500, seed=seed),
            track_test=False,
        )
        for seed, name in enumerate(("first", "second"))
    ]
    lines = []
    runner.run_specs(specs, tmp_path, jobs=jobs, threads=1, log=lines.append, report_every=0.02)
    progress = [line for line in lines if line.startswith("progress: ")]
    assert any("samples/s" in line and "of 6,000 samples" in line for line in progress), progress


def test_a_resumed_reproduction_first_says_where_its_runs_stand(tmp_path):
    import os
    import signal

    from aevb.errors import TrainingInterrupted
    from aevb.experiments import runner
    from aevb.runs import DataConfig
    from aevb.training import TrainConfig

    def stop_at_first_evaluation(model, data):
        os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: a checkpoint, then TrainingInterrupted
        return {}

    specs = [
        runner.FigureRun(
            name=name,
            data=DataConfig("mnist-sample"),
            model=ModelSpec(latent_dim=2, hidden_units=8),
            train=TrainConfig(max_samples=6_000, step_size=0.02, eval_subset=100, first_eval=500),
            track_test=False,
        )
        for name in ("first", "second")
    ]
    stopping = [dataclasses.replace(specs[0], extra_metrics=stop_at_first_evaluation)]
    with pytest.raises(TrainingInterrupted):
        runner.run_specs(stopping, tmp_path, threads=1, log=lambda line: None)
    lines = []
    runner.run_specs(specs, tmp_path, threads=1, log=lines.append, report_every=3600)
    assert re.fullmatch(r"progress: 1 of 2 runs not started; first [\d,]+ of 6,000 samples \(\d+\.\d%\)", lines[0]), (
        lines
    )
    assert (tmp_path / "first" / "summary.json").is_file() and (tmp_path / "second" / "summary.json").is_file()
    assert sum(line.endswith("done") or line.startswith("[") for line in lines) >= 2


def test_a_failed_job_stops_the_others_and_no_queued_run_starts(tmp_path):
    """--jobs 2: the first run fails at once in its worker (a setting its model refuses); the error
    is raised after the running job stops at a checkpoint, and the queued runs are never trained."""
    from aevb.errors import AevbError
    from aevb.experiments import runner
    from aevb.runs import DataConfig
    from aevb.training import TrainConfig

    def spec(name, activation="tanh"):
        return runner.FigureRun(
            name=name,
            data=DataConfig("mnist-sample"),
            model=ModelSpec(latent_dim=2, hidden_units=8, activation=activation),
            train=TrainConfig(max_samples=3_000_000, step_size=0.02, eval_subset=100),
            track_test=False,
        )

    specs = [spec("broken", activation="no-such-activation")] + [spec(f"run-{index}") for index in range(6)]
    with pytest.raises(AevbError, match="no-such-activation"):
        runner.run_specs(specs, tmp_path / "out", jobs=2, threads=1, log=lambda line: None)
    finished = [s.name for s in specs if (tmp_path / "out" / s.name / "summary.json").exists()]
    started = [s.name for s in specs[1:] if (tmp_path / "out" / s.name).exists()]
    assert finished == [] and len(started) <= 3, started


def test_data_that_cannot_be_found_is_an_error_before_any_run_trains(tmp_path):
    """fig2's Frey Face runs come after its MNIST runs: missing Frey Face data is said at once."""
    from aevb.errors import AevbError
    from aevb.experiments import runner
    from aevb.runs import DataConfig
    from aevb.training import TrainConfig

    specs = [
        runner.FigureRun(
            name=name,
            data=data,
            model=ModelSpec(latent_dim=2, hidden_units=8),
            train=TrainConfig(max_samples=10_000, step_size=0.02),
            track_test=False,
        )
        for name, data in (("first", DataConfig("mnist-sample")), ("second", DataConfig("frey", str(tmp_path))))
    ]
    with pytest.raises(AevbError, match="frey_rawface"):
        runner.run_specs(specs, tmp_path / "out", log=lambda line: None)
    assert not (tmp_path / "out").exists()


def test_warnings_of_parallel_jobs_are_one_line_and_name_their_run():
    import warnings

    from aevb.training.reporting import TrainingWarning, one_line_warnings

    def shown(text):  # what Python prints for a warning (pytest intercepts the printing itself)
        return warnings.formatwarning(TrainingWarning(text), TrainingWarning, "trainer.py", 156)

    with one_line_warnings("frey-z2-wake-sleep"):
        assert shown("the bound ended at -1511") == "aevb: warning: frey-z2-wake-sleep: the bound ended at -1511\n"
    with one_line_warnings():
        assert shown("plain") == "aevb: warning: plain\n"
    assert "trainer.py:156" in shown("plain")  # Python's own format again outside


def test_a_run_made_with_other_settings_is_neither_reused_nor_replaced(tmp_path):
    """Issue 28, item 6: another budget or seed is another run; a complete or interrupted one in
    the way is refused in one line, and kept."""
    from aevb.errors import AevbError
    from aevb.experiments import runner
    from aevb.runs import DataConfig
    from aevb.training import TrainConfig

    def spec(**train):
        return runner.FigureRun(
            name="mnist-z2-aevb",
            data=DataConfig("mnist-sample"),
            model=ModelSpec(latent_dim=2, hidden_units=8),
            train=TrainConfig(**{"max_samples": 1000, "selection_steps": 4, "eval_subset": 100, **train}),
        )

    logged = []
    runner.run_specs([spec()], tmp_path, log=logged.append)
    run = tmp_path / "mnist-z2-aevb"
    weights = (run / "model.safetensors").read_bytes()
    with pytest.raises(
        AevbError,
        match=r"mnist-z2-aevb holds a run made with other settings \(.*training.max_samples "
        r"1000, not 1500; training.seed 0, not 7\); choose another `out`",
    ):
        runner.run_specs([spec(max_samples=1500, seed=7)], tmp_path, log=logged.append)
    (run / "summary.json").unlink()  # as if interrupted: no longer complete
    with pytest.raises(AevbError, match="training.seed 0, not 7"):
        runner.run_specs([spec(seed=7)], tmp_path, log=logged.append)
    assert (run / "model.safetensors").read_bytes() == weights and not any("complete" in line for line in logged)
    runner.run_specs([spec()], tmp_path, log=logged.append)  # the same settings: trained again where it stopped
    assert (run / "summary.json").is_file()


def test_settings_that_change_nothing_in_a_run_are_no_difference():
    """A run stored by an older aevb with other defaults is still this run where those settings have
    no effect: the selection's length where the step size is given, σ of a normal init under Glorot's
    (the full-schedule NLL runs, resumed across session 17's change of defaults)."""
    from aevb.experiments.runner import settings_without_effect

    glorot_fixed = {"training.step_size": 1e-3, "model.init": "glorot"}
    assert settings_without_effect(glorot_fixed) == {
        "training.selection_steps",
        "training.selection_epochs",
        "training.step_size_candidates",
        "model.init_std",
    }
    assert settings_without_effect({"training.step_size": None, "model.init": "anglepy"}) == set()


def test_reproduce_with_another_budget_and_seed_in_the_same_out_is_one_line(shared_data, tmp_path, capsys):
    out = tmp_path / "fig4"
    argv = ["reproduce", "fig4", "--data-dir", str(shared_data), "--out", str(out), "--no-progress"]
    assert main([*argv, "--budget", "1500"]) == 0
    numbers = (out / "fig4.json").read_text()
    capsys.readouterr()
    assert main([*argv, "--budget", "2000", "--seed", "7"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training.max_samples 1500, not 2000; training.seed 0, not 7" in err, err
    assert "choose another --out" in err and (out / "fig4.json").read_text() == numbers
