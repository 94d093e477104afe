"""What users of pythae, Lightning and the Hugging Face tools expect (issue 16): configs in
(``--config``, ``--print-config``), models out (``aevb.load``), ``python -m aevb``, the data
download on every command that reads data, sample files that never overwrite each other."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch
from safetensors.torch import load_file
from test_cli import call

import aevb

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--hidden-units",
    "12",
    "--latent-dim",
    "2",
    "--selection-steps",
    "4",
    "--eval-subset",
    "200",
    "--max-samples",
    "2000",
    "--no-progress",
]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs") / "a"
    assert call(["train", *TINY, "--seed", "3", "--out", out]) == 0
    return out


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model.safetensors")


def test_a_runs_config_reruns_it_to_the_same_model_and_flags_override_its_fields(run, tmp_path):
    assert call(["train", "--config", run / "config.json", "--out", tmp_path / "again", "--no-progress"]) == 0
    first, again = _weights(run), _weights(tmp_path / "again")
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    stored = json.loads((tmp_path / "again" / "config.json").read_text())
    original = json.loads((run / "config.json").read_text())
    for section in ("model", "training", "algorithm"):
        assert stored[section] == original[section], section

    assert (
        call(["train", "--config", run / "config.json", "--seed", "4", "--out", tmp_path / "other", "--no-progress"])
        == 0
    )
    other = json.loads((tmp_path / "other" / "config.json").read_text())
    assert other["training"]["seed"] == 4 and other["model"] == original["model"]
    assert not all(torch.equal(first[k], _weights(tmp_path / "other")[k]) for k in first)


def test_print_config_resolves_without_training(run, tmp_path, capsys):
    capsys.readouterr()
    assert (
        call(
            [
                "train",
                "--config",
                run / "config.json",
                "--latent-dim",
                "5",
                "--print-config",
                "--out",
                tmp_path / "never",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"]["latent_dim"] == 5 and printed["model"]["hidden_units"] == 12
    assert printed["model"]["data_dim"] == 784 and printed["algorithm"] == "aevb"
    assert printed["training"]["max_samples"] == 2000
    assert not (tmp_path / "never").exists()


def test_a_config_file_that_is_not_a_runs_config_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": {"latent_dim": "three"}, "training": {}, "data": {"dataset": "mnist-sample"}}))
    capsys.readouterr()
    assert call(["train", "--config", bad, "--out", tmp_path / "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "latent_dim" in err and not (tmp_path / "x").exists()


def test_load_returns_the_trained_model_ready_to_use(run):
    model = aevb.load(run, device="cpu")
    assert not model.training
    weights = _weights(run)
    assert all(torch.equal(model.state_dict()[name], value) for name, value in weights.items())
    x = torch.rand(4, 784).round()
    assert model.reconstruct(x).shape == (4, 784) and model.sample(3).shape == (3, 784)


def test_python_dash_m_aevb_is_the_command():
    done = subprocess.run([sys.executable, "-m", "aevb", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and aevb.__version__ in done.stdout + done.stderr


def test_the_package_ships_its_license_and_type_marker():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"} and "MIT License" in (ROOT / "LICENSE").read_text()
    assert (ROOT / "aevb" / "py.typed").exists()
    assert "tensorboard" in project["optional-dependencies"]


def test_evaluate_and_reproduce_take_the_download_option_their_hint_names(run, capsys):
    """The missing-data error says to add --download; both commands that read data accept it."""
    assert call(["evaluate", run, "--num-points", "20", "--download"]) == 0  # data present: nothing fetched
    capsys.readouterr()
    assert call(["reproduce", "--help"]) == 0
    assert "--download" in capsys.readouterr().out


def test_a_labelled_sample_never_overwrites_the_unlabelled_one(tmp_path):
    conditional = tmp_path / "cond"
    assert call(["train", *TINY, "--conditional", "--out", conditional]) == 0
    assert call(["sample", conditional, "--num", "10"]) == 0
    grid = (conditional / "samples-seed0.png").read_bytes()
    assert call(["sample", conditional, "--num", "10", "--label", "3"]) == 0
    assert (conditional / "samples-seed0-label3.png").exists()
    assert (conditional / "samples-seed0.png").read_bytes() == grid


class _LinearGaussian(torch.nn.Module):
    """A model of the user's own: only encode, decode and prior (no reset_parameters, no config)."""

    def __init__(self, data_dim: int = 6, latent_dim: int = 2):
        super().__init__()
        self.encoder = torch.nn.Linear(data_dim, 2 * latent_dim)
        self.decoder = torch.nn.Linear(latent_dim, data_dim)
        self.latent_dim = latent_dim

    def encode(self, x):
        mean, log_var = self.encoder(x).chunk(2, dim=-1)
        return torch.distributions.Independent(torch.distributions.Normal(mean, (0.5 * log_var).exp()), 1)

    def decode(self, z):
        return torch.distributions.Independent(torch.distributions.Bernoulli(logits=self.decoder(z)), 1)

    def prior(self):
        zeros = torch.zeros(self.latent_dim)
        return torch.distributions.Independent(torch.distributions.Normal(zeros, torch.ones_like(zeros)), 1)


def test_the_trainer_trains_any_module_with_encode_decode_and_prior():
    from aevb import TrainConfig, Trainer

    torch.manual_seed(0)
    model = _LinearGaussian()
    data = torch.rand(200, 6).round()
    before = model.encoder.weight.detach().clone()
    config = TrainConfig(step_size=0.05, max_samples=4000, first_eval=4000, optimizer="adagrad")  # (no warm-up)
    result = Trainer(model, data, config).fit()
    assert result.history[-1].train_bound > result.history[0].train_bound - 5  # trained, finite
    assert torch.isfinite(torch.tensor(result.history[-1].train_bound))
    after = model.encoder.weight.detach()
    # Trained from the user's own weights: moved by the steps, not re-drawn.
    assert not torch.equal(before, after) and (after - before).abs().max() < 1.0


def test_initialise_false_fine_tunes_the_weights_a_vae_has():
    from aevb import VAE, ModelConfig, TrainConfig, Trainer

    model = VAE(ModelConfig(data_dim=6, latent_dim=2, hidden_units=4))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(0.123)
    config = TrainConfig(step_size=1e-4, max_samples=200, first_eval=200, batch_size=20)
    Trainer(model, torch.rand(40, 6).round(), TrainConfig(**{**config.to_dict(), "initialise": False})).fit()
    assert all((p - 0.123).abs().max() < 0.01 for p in model.parameters())
    Trainer(model, torch.rand(40, 6).round(), config).fit()  # the default: §5's initialisation
    assert any((p - 0.123).abs().max() > 0.05 for p in model.parameters())


def _stderr_of(argv: list, terminal: bool) -> str:
    """The stderr of ``python -m aevb argv``, written to a pseudo-terminal or to a pipe."""
    import os
    import pty

    if not terminal:
        done = subprocess.run(
            [sys.executable, "-m", "aevb", *map(str, argv)], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        return done.stderr
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))  # a terminal has columns
    process = subprocess.Popen(
        [sys.executable, "-m", "aevb", *map(str, argv)], stdout=subprocess.DEVNULL, stderr=follower
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=300) == 0
    return b"".join(chunks).decode(errors="replace")


def test_long_commands_show_progress_with_the_time_left_on_a_terminal_only(run):
    argv = ["evaluate", run, "--nll", "--k", "50", "--num-points", "200", "--threads", "1"]
    shown = _stderr_of(argv, terminal=True)
    assert "log p(x), k = 50" in shown and "100%|" in shown and "<00:00" in shown  # elapsed<remaining
    assert "%|" not in _stderr_of(argv, terminal=False)  # a log file stays clean
    assert "%|" not in _stderr_of([*argv, "--no-progress"], terminal=True)


def test_the_training_bar_shows_one_throughput_figure(tmp_path):
    shown = _stderr_of(
        [
            "train",
            "--hidden-units",
            "12",
            "--latent-dim",
            "2",
            "--selection-steps",
            "4",
            "--eval-subset",
            "200",
            "--max-samples",
            "3000",
            "--out",
            tmp_path / "r",
            "--threads",
            "1",
        ],
        terminal=True,
    )
    assert "choosing the step size" in shown and "training:" in shown
    final = [line for line in shown.replace("\r", "\n").splitlines() if line.startswith("training:")][-1]
    # ours (measured over training alone), not also tqdm's own rate (which counts the evaluations)
    assert final.count("samples_per_s=") == 1 and "/s" not in final and "<00:00" in final, final


@pytest.mark.parametrize(
    "options",
    [{}, {"likelihood": "gaussian"}, {"posterior": "laplace", "prior": "gaussian"}, {"num_classes": 3}],
    ids=["bernoulli", "gaussian", "no-closed-form-kl", "conditional"],
)
def test_a_vaes_forward_is_the_sgvb_estimate_a_users_loop_can_minimise(options):
    from aevb.models import build_model
    from aevb.models.config import ModelConfig
    from aevb.models.families import has_closed_form_kl
    from aevb.objectives.estimators import estimator_a, estimator_b

    torch.manual_seed(0)
    model = build_model(ModelConfig(data_dim=6, latent_dim=2, hidden_units=5, **options))
    x = torch.rand(4, 6).round()
    if options.get("num_classes"):
        x = torch.cat([x, torch.nn.functional.one_hot(torch.tensor([0, 2, 1, 0]), 3).float()], dim=1)
    closed_form = has_closed_form_kl(options.get("posterior", "gaussian"), options.get("prior", "gaussian"))
    reference = estimator_b if closed_form else estimator_a
    torch.manual_seed(1)
    bound = model(x)
    torch.manual_seed(1)
    torch.testing.assert_close(bound, reference(model, x, 1), rtol=1e-6, atol=1e-6)
    (-bound.mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_compare_overlays_runs_labelled_by_their_differing_settings(run, tmp_path, capsys):
    other = tmp_path / "b"
    assert call(["train", *TINY, "--seed", "3", "--latent-dim", "3", "--out", other]) == 0
    figure = tmp_path / "compare.png"
    capsys.readouterr()
    assert call(["compare", run, other, "--out", figure]) == 0
    table = capsys.readouterr().out
    assert f"{run.name} (latent_dim=2)" in table and "b (latent_dim=3)" in table
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert call(["compare", run, other, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    final = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert rows[0]["samples"] == 2000 and rows[0]["train_bound"] == final["train_bound"]
    assert call(["compare", run, "--out", tmp_path / "figure.pdf"]) == 2
    assert "figure is a .png" in capsys.readouterr().err


def test_evaluate_takes_several_runs(run, tmp_path, capsys):
    capsys.readouterr()
    assert call(["evaluate", run, run, "--num-points", "20", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert isinstance(results, list) and len(results) == 2 and results[0]["num_datapoints"] == 20


def _tiny_train_run(out: Path, loggers=(), **options):
    from aevb.runs import ModelSpec, RunOptions, RunSpec, train_run
    from aevb.training import TrainConfig

    spec = RunSpec(
        model=ModelSpec(latent_dim=2, hidden_units=8),
        # (torch's Adagrad moves from the first step: the defaults' 100-step warm-up is most of this run)
        training=TrainConfig(max_samples=2000, selection_steps=4, eval_subset=100, first_eval=500, optimizer="adagrad"),
        run=RunOptions(progress=False, loggers=loggers),
    )
    return train_run(spec, out, **options)


def test_train_run_calls_a_metrics_callback_and_every_named_tracker(tmp_path, monkeypatch):
    from aevb.runs import loggers

    seen, events = [], []

    class Recording(loggers.MetricsLogger):
        name, package, extra = "recording", "json", "json"

        def __init__(self, run_dir, config):
            events.append(("open", run_dir.name, config["model"]["latent_dim"]))

        def log(self, metrics):
            events.append(("log", metrics.samples))

        def close(self, completed=True):
            events.append(("close",))

    monkeypatch.setitem(loggers.LOGGERS, "recording", Recording)
    run = _tiny_train_run(tmp_path / "r", loggers=("recording",), on_metrics=seen.append)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m.samples for m in seen] == [line["samples"] for line in lines] and len(seen) >= 2
    assert events[0] == ("open", "r", 2) and events[-1] == ("close",)
    assert [event[1] for event in events[1:-1]] == [line["samples"] for line in lines]


@pytest.mark.parametrize("tracker", ["tensorboard", "wandb", "mlflow"])
def test_a_tracker_that_is_not_installed_is_one_line_and_leaves_no_run(tracker, tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec(tracker) is not None:
        pytest.skip(f"{tracker} is installed")
    capsys.readouterr()
    assert call(["train", *TINY, "--logger", tracker, "--out", tmp_path / "r"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"pip install 'aevb[{tracker}]'" in err and f"--logger {tracker}" in err
    assert not (tmp_path / "r").exists()


def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = _tiny_train_run(tmp_path / "r", loggers=("wandb",))
    assert list((run / "wandb").glob("offline-run-*"))


def test_mlflow_local_store(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    run = _tiny_train_run(tmp_path / "r", loggers=("mlflow",))
    mlflow.set_tracking_uri(f"sqlite:///{run / 'mlflow.db'}")
    found = mlflow.search_runs(search_all_experiments=True)
    assert len(found) == 1 and "metrics.train_bound" in found.columns
    assert found["params.model.latent_dim"][0] == "2"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["r"]


def test_the_hub_mixin_saves_and_loads_on_a_local_directory(run, tmp_path):
    pytest.importorskip("huggingface_hub")
    from aevb.hub import from_pretrained, save_pretrained

    model = aevb.load(run, device="cpu")
    save_pretrained(model, tmp_path / "shared")
    files = {path.name for path in (tmp_path / "shared").iterdir()}
    assert {"model.safetensors", "model.json", "config.json", "README.md"} <= files  # no pickle
    again = from_pretrained(tmp_path / "shared")
    assert not again.training and again.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert aevb.load(run, device="cpu").config == again.config  # also an aevb model directory
    from aevb.checkpoint import load_model

    assert torch.equal(load_model(tmp_path / "shared").decoder.net.heads.weight, model.decoder.net.heads.weight)


@pytest.mark.parametrize("keep", ["finished", "unfinished"])
def test_save_pretrained_refuses_a_run_directory_and_the_run_stays_whole(run, tmp_path, keep):
    # (issue 28, item 5) The Hub's config.json would replace the run's: evaluate, compare and
    # --resume would all fail on it. Refused with or without the [hub] extra.
    import shutil

    from aevb.errors import AevbError
    from aevb.hub import save_pretrained

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    if keep == "unfinished":  # killed before its first evaluation point: config.json and the lock only
        for path in copy.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.name not in ("config.json", ".lock"):
                path.unlink()
    before = {path: path.read_bytes() for path in copy.rglob("*") if path.is_file()}
    with pytest.raises(AevbError, match=f"{copy} holds an aevb run"):
        save_pretrained(aevb.load(run, device="cpu"), copy)
    assert {path: path.read_bytes() for path in copy.rglob("*") if path.is_file()} == before


def test_without_the_hub_extra_the_functions_say_how_to_install_it(run, tmp_path):
    import importlib.util

    if importlib.util.find_spec("huggingface_hub") is not None:
        pytest.skip("huggingface_hub is installed")
    from aevb.errors import AevbError
    from aevb.hub import save_pretrained

    with pytest.raises(AevbError, match=r"pip install 'aevb\[hub\]'"):
        save_pretrained(aevb.load(run, device="cpu"), tmp_path / "shared")


def test_tensorboard_logger_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    run = _tiny_train_run(tmp_path / "r", loggers=("tensorboard",))
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_compare_does_not_count_a_setting_an_older_run_did_not_record_as_a_difference():
    from aevb.runs.compare import differing_settings

    old = {"train": {"max_samples": 100, "seed": 0}}  # written before `initialise` existed
    new = [
        {"train": {"max_samples": 200, "seed": 0, "initialise": True}},
        {"train": {"max_samples": 100, "seed": 0, "initialise": True}},
    ]
    assert differing_settings([old, *new]) == [{"max_samples": 100}, {"max_samples": 200}, {"max_samples": 100}]
    new[1]["train"]["initialise"] = False  # a real difference among the runs that record it
    assert differing_settings([old, *new]) == [
        {"max_samples": 100},
        {"initialise": True, "max_samples": 200},
        {"initialise": False, "max_samples": 100},
    ]


def test_compare_names_runs_by_directory_in_the_legend_when_their_settings_would_not_fit(run, tmp_path, monkeypatch):
    from aevb import figures

    other = tmp_path / "runs" / "a"  # the same directory name as `run`: told apart by the parent's
    assert (
        call(
            [
                "train",
                *TINY,
                "--seed",
                "5",
                "--latent-dim",
                "3",
                "--batch-size",
                "50",
                "--estimator",
                "A",
                "--samples-per-datapoint",
                "2",
                "--hidden-units",
                "13",
                "--out",
                other,
            ]
        )
        == 0
    )
    drawn = []
    monkeypatch.setattr(figures.plt, "close", lambda figure: drawn.append(figure))
    assert call(["compare", run, other, "--out", tmp_path / "compare.png"]) == 0
    legend = [text.get_text() for text in drawn[-1].axes[0].get_legend().get_texts()]
    assert legend == [f"{run.parent.name}/a", "runs/a"]


def test_a_run_still_training_or_stopped_is_evaluated_and_sampled_from_its_latest_checkpoint(tmp_path, capsys):
    """A long run can be looked at before it ends: --checkpoint loads the latest checkpoint's
    weights (bit for bit), says where it was taken, and leaves the run's files alone."""
    import os
    import signal

    from aevb.errors import TrainingInterrupted
    from aevb.runs import load
    from aevb.training.checkpoints import load_checkpoint

    def stop_after_first_evaluation(metrics):
        os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: a checkpoint, then TrainingInterrupted

    run = tmp_path / "r"
    with pytest.raises(TrainingInterrupted):
        _tiny_train_run(run, on_metrics=stop_after_first_evaluation)
    state = load_checkpoint(run)
    model = load(run, device="cpu", checkpoint=True)
    assert all(torch.equal(value, state.model[name]) for name, value in model.state_dict().items())
    before = sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*"))

    def run_cli(argv):
        capsys.readouterr()
        code = call(argv)
        return (code, *capsys.readouterr())

    def assert_one_line_error(code, out, err):
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err

    code, out, err = run_cli(["evaluate", run, "--num-points", "50"])
    assert_one_line_error(code, out, err)
    assert "has not finished" in err and "--checkpoint" in err

    code, out, err = run_cli(["evaluate", run, "--checkpoint", "--num-points", "50", "--samples", "3", "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["checkpoint_samples"] == state.samples and result["checkpoint_steps"] == state.steps
    assert -250 < result["test_bound"] < 0
    code, out, err = run_cli(["evaluate", run, "--checkpoint", "--num-points", "50", "--samples", "3"])
    assert code == 0 and f"the checkpoint at {state.samples:,} training samples" in out, (out, err)

    code, out, err = run_cli(["sample", run, "--checkpoint", "--num", "4"])
    assert code == 0, err
    written = run / "samples-seed0-checkpoint.png"
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and written.name in out
    written.unlink()
    assert sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*")) == before

    # A finished run keeps its final checkpoint (to be extended from): the model it ended with.
    finished = _tiny_train_run(tmp_path / "finished")
    code, out, err = run_cli(["evaluate", finished, "--checkpoint", "--num-points", "20", "--json"])
    summary = json.loads((finished / "summary.json").read_text())
    assert code == 0 and json.loads(out)["checkpoint_samples"] == summary["samples"], err


def test_training_without_a_bar_writes_progress_lines_for_the_log(tmp_path, capsys, monkeypatch):
    """Under nohup or a batch scheduler no bar shows: a line every REPORT_EVERY_SECONDS says how far
    the run is, how fast it goes and how long it has left."""
    from aevb.runs import progress_report

    monkeypatch.setattr(progress_report, "REPORT_EVERY_SECONDS", 0.01)
    capsys.readouterr()
    assert call(["train", *TINY, "--max-samples", "20000", "--checkpoint-every", "10", "--out", tmp_path / "r"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("progress: r ")]
    assert any(line.endswith(" left") and "of 20,000 samples" in line and "samples/s" in line for line in lines), lines
