"""The README's promises under abuse (issue 14): no run is lost or mixed with another, a diverging
run rolls back with half the step size each time, and bad input of any kind ends in one line and
exit status 2. Each test here failed on the code before its fix; the item numbers are the issue's.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_cli import FAST, assert_usage_error, call, run_cli

from aevb.training.reporting import TrainingWarning

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = [
    "--hidden-units",
    "16",
    "--latent-dim",
    "3",
    "--step-size",
    "0.02",
    "--eval-subset",
    "200",
    "--no-progress",
    "--threads",
    "1",
]


def _interrupted_run(monkeypatch, run: Path, *extra: str, after_checks: int = 40, samples: str = "30000") -> None:
    """A run stopped as SIGTERM stops it, after ``after_checks`` steps: a checkpoint and no model."""
    from aevb.runs.process import StopOnSignal

    calls = {"n": 0}

    def stop(self):
        calls["n"] += 1
        return calls["n"] > after_checks

    with monkeypatch.context() as patch:
        patch.setattr(StopOnSignal, "__call__", stop)
        assert call(["train", *SMALL, "--max-samples", samples, "--checkpoint-every", "5", "--out", run, *extra]) == 130
    assert (run / "checkpoints").is_dir() and not (run / "model.safetensors").exists()


def _edit_json(path: Path, edit) -> None:
    value = json.loads(path.read_text())
    edit(value)
    path.write_text(json.dumps(value))


# ---------------------------------------------------------------- 1. --overwrite and foreign checkpoints


def test_overwrite_removes_the_old_runs_checkpoints_so_resume_continues_the_new_run(tmp_path, monkeypatch, capsys):
    from aevb.runs import train

    run = tmp_path / "run"
    _interrupted_run(monkeypatch, run, "--tensorboard" if _has_tensorboard() else "--seed=0")

    def killed_before_its_first_checkpoint(*args, **kwargs):
        raise KeyboardInterrupt  # as SIGKILL would leave it: config.json written, nothing else

    with monkeypatch.context() as patch:
        patch.setattr(train, "fit_into", killed_before_its_first_checkpoint)
        call(
            [
                "train",
                "--hidden-units",
                "12",
                "--latent-dim",
                "2",
                "--max-samples",
                "3000",
                "--seed",
                "7",
                "--step-size",
                "0.02",
                "--eval-subset",
                "200",
                "--no-progress",
                "--out",
                run,
                "--overwrite",
            ]
        )
    assert not (run / "checkpoints").exists() and not (run / "tensorboard").exists()
    assert json.loads((run / "config.json").read_text())["training"]["seed"] == 7

    code, _, err = run_cli(capsys, ["train", "--resume", run, "--no-progress"])
    assert code == 0, err
    model = json.loads((run / "model.json").read_text())["model"]
    assert (model["hidden_units"], model["latent_dim"]) == (12, 2)  # the new run's model, trained afresh
    assert (run / "metrics.jsonl").read_text().strip()


def _has_tensorboard() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def test_resume_refuses_a_checkpoint_written_under_other_settings(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _interrupted_run(monkeypatch, run)
    _edit_json(run / "config.json", lambda config: config["training"].update(seed=7))
    code, out, err = run_cli(capsys, ["train", "--resume", run, "--no-progress"])
    assert_usage_error(code, out, err)
    assert "other settings" in err


def test_resume_refuses_data_whose_values_changed_since_the_run_began(tmp_path, monkeypatch, capsys):
    # (issue 28, item 15) The same shape, other values: continuing would train one run on two data sets.
    import numpy as np

    data, run = tmp_path / "data.npy", tmp_path / "run"
    original = np.random.default_rng(0).random((400, 12), dtype=np.float32)
    np.save(data, original)
    _interrupted_run(monkeypatch, run, "--dataset", data)
    changed = original.copy()
    changed[123, 4] = 0.5 if changed[123, 4] != 0.5 else 0.25  # one value
    np.save(data, changed)
    code, out, err = run_cli(capsys, ["train", "--resume", run, "--no-progress"])
    assert_usage_error(code, out, err)
    assert f"the data of {run} changed since it began" in err and str(data) in err
    np.save(data, original)  # the same values again, in a new file: resumed
    assert call(["train", "--resume", run, "--no-progress"]) == 0


# ------------------------------------------------------------------------ 3. every rollback halves


def test_each_rollback_halves_the_step_size_again_and_is_reported(monkeypatch):
    from test_resume import _poisoned, _train

    from aevb.errors import AevbError
    from aevb.training import TrainConfig

    torch.manual_seed(0)
    data = torch.rand(230, 12)
    config = TrainConfig(batch_size=20, max_samples=1200, step_size=0.05, first_eval=400, evals_per_decade=4)
    _poisoned(monkeypatch, set(range(1, 10_000)))
    with pytest.warns(RuntimeWarning) as caught, pytest.raises(AevbError, match="after 3 rollbacks"):
        _train(data, config, "aevb")
    messages = [str(warning.message) for warning in caught if "rollback" in str(warning.message)]
    assert len(messages) == 3, messages
    for message, step_size in zip(messages, ("0.025", "0.0125", "0.00625")):
        assert f"step size {step_size}," in message, message


def test_rollbacks_reach_the_user_each_time_also_in_a_second_run(tmp_path):
    """Python's default warning filter shows a text once per place and process; each rollback is
    news, so a second identical run in the same process must show its rollbacks again."""
    argv = [
        "train",
        "--hidden-units",
        "50",
        "--latent-dim",
        "5",
        "--max-samples",
        "30000",
        "--threads",
        "1",
        "--step-size",
        "60",
        "--log-variance-bound",
        "0",
        "--engine",
        "autograd",
        "--eval-subset",
        "200",
        "--no-progress",
    ]
    script = (
        f"from aevb.cli import main\n"
        f"for name in ('first', 'second'):\n"
        f"    main({argv!r} + ['--out', {str(tmp_path)!r} + '/' + name])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    rollbacks = [line for line in done.stderr.splitlines() if "rollback" in line and "warning" in line]
    assert len(rollbacks) == 6, done.stderr
    assert [line.count("rollback 1 of") for line in rollbacks] == [1, 0, 0, 1, 0, 0]


# --------------------------------------------------------------------------- 4. --threads bounded


@pytest.mark.parametrize("command", [["train"], ["evaluate", "RUN"], ["reproduce", "fig2"]])
def test_threads_beyond_the_cpus_are_refused_in_one_line(capsys, command):
    code, out, err = run_cli(capsys, [*command, "--threads", "100000"])
    assert_usage_error(code, out, err)
    assert "at most" in err


@pytest.mark.parametrize("device", ["mps", "xpu", "meta", "cpu:5", "cuda:x", "banana"])
@pytest.mark.parametrize("command", [["train", "--max-samples", "1e4"], ["reproduce", "fig5"]])
def test_a_device_aevb_cannot_train_on_is_refused_in_one_line(capsys, tmp_path, command, device):
    code, out, err = run_cli(capsys, [*command, "--device", device, "--out", tmp_path / "out"])
    assert_usage_error(code, out, err)
    assert "cpu, cuda or cuda:N" in err and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ 7. the run lock


def test_a_run_in_use_by_another_process_is_refused(tmp_path, monkeypatch, capsys):
    from aevb.runs.lock import RunLock

    run = tmp_path / "run"
    _interrupted_run(monkeypatch, run)
    before = (run / "metrics.jsonl").read_text()
    with RunLock(run):  # another training holds the run
        for argv in (
            ["train", "--resume", run, "--no-progress"],
            ["train", *SMALL, "--max-samples", "2000", "--out", run, "--overwrite"],
        ):
            code, out, err = run_cli(capsys, argv)
            assert_usage_error(code, out, err)
            assert "in use by another aevb process" in err
            assert (run / "checkpoints").is_dir() and (run / "metrics.jsonl").read_text() == before
    assert call(["train", "--resume", run, "--no-progress"]) == 0  # free again


def test_two_resumes_at_once_the_second_is_refused_and_each_metrics_line_is_written_once(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _interrupted_run(monkeypatch, run, samples="300000")  # ~10 s left to train: the second comes meanwhile
    command = [sys.executable, "-m", "aevb.cli", "train", "--resume", str(run), "--no-progress", "--threads", "1"]
    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (run / ".lock").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(2.0)  # (the code before the fix has no lock file: by now it is training)
    second = subprocess.run(command, stderr=subprocess.PIPE, text=True, timeout=600)
    assert first.wait(timeout=600) == 0, first.stderr.read()
    assert second.returncode == 2 and "in use by another aevb process" in second.stderr, second.stderr
    samples = [json.loads(line)["samples"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert samples == sorted(set(samples)), samples


# ------------------------------------------------- issue 28, item 2: links in a run directory


def _link(path: Path, target: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    path.unlink(missing_ok=True)
    path.symlink_to(target)


def _assert_untouched(victim: Path, dangling: bool) -> None:
    assert not victim.exists() if dangling else victim.read_text() == "precious\n"


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
@pytest.mark.parametrize("name", [".lock", "metrics.jsonl"])
def test_resume_refuses_a_run_whose_files_are_links_and_writes_nothing_through_them(
    tmp_path, monkeypatch, capsys, name, dangling
):
    run, victim = tmp_path / "run", tmp_path / "victim"
    _interrupted_run(monkeypatch, run)
    if not dangling:
        victim.write_text("precious\n")
    _link(run / name, victim)
    code, out, err = run_cli(capsys, ["train", "--resume", run, "--no-progress"])
    assert_usage_error(code, out, err)
    assert f"{run / name} is a symbolic link" in err
    _assert_untouched(victim, dangling)


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
@pytest.mark.parametrize("name", [".lock", "metrics.jsonl", "tensorboard"])
def test_a_new_run_refuses_an_out_directory_holding_links(tmp_path, capsys, name, dangling):
    out, victim = tmp_path / "out", tmp_path / "victim"
    out.mkdir()
    if not dangling:
        victim.write_text("precious\n")
    _link(out / name, victim)
    code, stdout, err = run_cli(capsys, ["train", *SMALL, "--max-samples", "2000", "--out", out])
    assert_usage_error(code, stdout, err)
    assert f"{out / name} is a symbolic link" in err
    _assert_untouched(victim, dangling)


def test_sample_writes_its_default_file_through_no_link(finished_run, tmp_path, capsys):
    run, victim = tmp_path / "run", tmp_path / "victim"
    shutil.copytree(finished_run, run)
    victim.write_text("precious\n")
    _link(run / "samples-seed0.png", victim)
    code, out, err = run_cli(capsys, ["sample", run, "--num", "4"])
    assert_usage_error(code, out, err)
    assert "samples-seed0.png is a symbolic link" in err
    _assert_untouched(victim, False)


def test_the_lock_and_metrics_files_are_opened_without_following_a_link_planted_after_the_checks(tmp_path):
    # The checks above come first; a link planted between them and the open is still not followed.
    from aevb.checkpoint import open_no_follow
    from aevb.errors import AevbError
    from aevb.runs.lock import RunLock

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / ".lock").symlink_to(victim)
    (tmp_path / "metrics.jsonl").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(AevbError, match=r"\.lock is a symbolic link"):
        RunLock(tmp_path).__enter__()
    with pytest.raises(AevbError, match=r"metrics\.jsonl is a symbolic link"):
        open_no_follow(tmp_path / "metrics.jsonl", "a")
    _assert_untouched(victim, False)
    assert not (tmp_path / "elsewhere").exists()


# ------------------------------------------------------------------------ 8. hand-edited run files


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda c: c["training"].update(estimator=5), "estimator must be a string"),
        (lambda c: c["training"].update(batch_size="x"), "batch_size must be an integer"),
        (lambda c: c["data"].update(train_limit="x"), "train_limit must be an integer or null"),
        (lambda c: c.update(data="mnist"), "data must be a JSON object"),
    ],
)
def test_evaluate_refuses_a_hand_edited_config_in_one_line(finished_run, tmp_path, capsys, edit, words):
    run = shutil.copytree(finished_run, tmp_path / "run")
    _edit_json(run / "config.json", edit)
    code, out, err = run_cli(capsys, ["evaluate", run, "--num-points", "10"])
    assert_usage_error(code, out, err)
    assert words in err


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda c: c.update(algorithm=["x"]), "unknown algorithm"),
        (lambda c: c.update(data="mnist"), "data must be a JSON object"),
        (lambda c: c["training"].update(batch_size="x"), "batch_size must be an integer"),
        (lambda c: c["data"].update(train_limit="x"), "train_limit must be an integer or null"),
        (lambda c: c["model"].update(latent_dim=1e30), "latent_dim must be an integer"),
        (lambda c: c["model"].update(hidden_layers=1e9), "hidden_layers must be an integer"),
    ],
)
def test_resume_refuses_a_hand_edited_config_in_one_line(tmp_path, monkeypatch, capsys, edit, words):
    run = tmp_path / "run"
    _interrupted_run(monkeypatch, run)
    _edit_json(run / "config.json", edit)
    code, out, err = run_cli(capsys, ["train", "--resume", run, "--no-progress"])
    assert_usage_error(code, out, err)
    assert words in err


def test_resume_refuses_a_checkpoint_with_a_hand_edited_optimiser_setting(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _interrupted_run(monkeypatch, run)
    for state in (run / "checkpoints").glob("step-*/state.json"):
        _edit_json(state, lambda fields: fields["optimizer"]["param_groups"][0].update(lr="x"))
    code, out, err = run_cli(capsys, ["train", "--resume", run, "--no-progress"])
    assert_usage_error(code, out, err)
    assert "lr" in err


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda m: m["model"].update(hidden_layers=1e9), "hidden_layers must be an integer"),
        (lambda m: m["model"].update(latent_dim=1e30), "latent_dim must be an integer"),
        (lambda m: m["model"].update(likelihood=3), "likelihood must be a string"),
    ],
)
def test_a_hand_edited_model_file_is_refused_in_one_line(finished_run, tmp_path, capsys, edit, words):
    run = shutil.copytree(finished_run, tmp_path / "run")
    _edit_json(run / "model.json", edit)
    for argv in (["evaluate", run, "--num-points", "10"], ["sample", run, "--num", "4"]):
        code, out, err = run_cli(capsys, argv)
        assert_usage_error(code, out, err)
        assert words in err


# ---------------------------------------------------------------------------- 9. NaN weights


def test_a_model_with_nan_weights_is_refused_when_loaded(finished_run, tmp_path, capsys):
    run = shutil.copytree(finished_run, tmp_path / "run")
    weights = load_file(run / "model.safetensors")
    name = sorted(weights)[0]
    weights[name][0] = float("nan")
    save_file(weights, run / "model.safetensors")
    for argv in (["evaluate", run, "--json", "--num-points", "10"], ["sample", run, "--num", "4"]):
        code, out, err = run_cli(capsys, argv)
        assert_usage_error(code, out, err)
        assert "NaN or infinite weights" in err


def test_evaluate_says_why_an_infinite_estimate_has_no_error_bar(finished_run, tmp_path, capsys):
    run = shutil.copytree(finished_run, tmp_path / "run")
    weights = load_file(run / "model.safetensors")
    weights["decoder.net.heads.bias"][:] = 3e38  # every pixel's logit: the bound and log p(x) are -inf
    save_file(weights, run / "model.safetensors")
    code, out, err = run_cli(capsys, ["evaluate", run, "--num-points", "5", "--nll", "--k", "10", "--no-progress"])
    assert code == 0, err
    bound, likelihood = out.splitlines()[1:3]
    assert bound.endswith("-inf (no standard error: the estimate is -inf)"), out
    assert "k = 10: -inf (no standard error: the estimate is -inf)" in likelihood, out
    assert "one datapoint" not in out and "k = 1)" not in out


@pytest.mark.parametrize("as_json", [False, True])
def test_evaluate_prints_each_result_as_it_finishes_so_a_later_failure_loses_none(
    finished_run, tmp_path, monkeypatch, capsys, as_json
):
    import functools

    import aevb.cli.commands

    json_flag = ["--json"] if as_json else []
    code, out, err = run_cli(
        capsys,
        [
            "evaluate",
            finished_run,
            tmp_path / "missing",
            finished_run,
            "--num-points",
            "5",
            "--no-progress",
            *json_flag,
        ],
    )
    assert_usage_error(code, "", err)
    assert f"{tmp_path / 'missing'} not found; not evaluated: {finished_run}" in err
    if as_json:
        assert [result["num_datapoints"] for result in json.loads(out)] == [5]
    else:
        assert out.startswith(f"{finished_run}\n") and out.count("lower bound") == 1
    evaluate_run, calls = aevb.cli.commands.evaluate_run, []

    @functools.wraps(evaluate_run)
    def interrupted_second(**options):  # Ctrl-C during the second run's evaluation
        calls.append(options["run_dir"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate_run(**options)

    monkeypatch.setattr(aevb.cli.commands, "evaluate_run", interrupted_second)
    code, out, err = run_cli(
        capsys, ["evaluate", finished_run, finished_run, "--num-points", "5", "--no-progress", *json_flag]
    )
    assert code == 130 and err.strip() == "aevb evaluate: interrupted"
    assert (len(json.loads(out)) if as_json else out.count("lower bound")) == 1


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--nll", "--k", "1e12"], "--nll (--k) asks for 5e+12 decoder evaluations on 5 points, about 4629.6 h"),
        (["--samples", "3e9"], "--samples asks for 1.5e+10 decoder evaluations on 5 points"),
        (["--hmc", "--hmc-samples", "1e9"], "--hmc-samples asks for 4e+10 decoder evaluations"),
    ],
)
def test_an_evaluation_that_cannot_finish_in_reasonable_time_is_refused(finished_run, capsys, argv, words):
    code, out, err = run_cli(capsys, ["evaluate", finished_run, "--num-points", "5", "--no-progress", *argv])
    assert_usage_error(code, out, err)
    assert words in err and "at most 1e+10: ask for fewer, or for fewer --num-points" in err, err


def test_every_estimate_of_evaluate_reports_its_progress_where_no_bar_is_shown(finished_run, capsys, monkeypatch):
    import aevb.progress

    monkeypatch.setattr(aevb.progress, "LOG_EVERY_SECONDS", 0.0, raising=False)  # a line at every update
    code, out, err = run_cli(
        capsys, ["evaluate", finished_run, "--num-points", "20", "--samples", "300", "--nll", "--k", "50"]
    )
    assert code == 0, err
    assert "bound, L = 300: " in err and "log p(x), k = 50: " in err and " left" in err, err
    code, out, err = run_cli(capsys, ["evaluate", finished_run, "--num-points", "20", "--nll", "--no-progress"])
    assert code == 0 and err == ""


def test_evaluate_json_is_strict_json(finished_run, capsys):
    code, out, err = run_cli(capsys, ["evaluate", finished_run, "--json", "--num-points", "1"])
    assert code == 0, err
    json.loads(out, parse_constant=lambda token: pytest.fail(f"{token} in --json output"))  # stderr of 1 point: NaN


# ---------------------------------------------------------------------- 10. permissions of run files


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_run_files_follow_the_umask(tmp_path, monkeypatch, umask):
    run = tmp_path / "run"
    previous = os.umask(umask)
    try:
        _interrupted_run(monkeypatch, run)
        assert call(["train", "--resume", run, "--no-progress"]) == 0
        interrupted = tmp_path / "interrupted"
        _interrupted_run(monkeypatch, interrupted)
    finally:
        os.umask(previous)
    for name in ("config.json", "model.json", "model.safetensors", "summary.json", "metrics.jsonl", "bound.png"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o666 & ~umask, name
    checkpoint = next((interrupted / "checkpoints").glob("step-*"))
    assert stat.S_IMODE(checkpoint.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((interrupted / "checkpoints" / "latest.json").stat().st_mode) == 0o666 & ~umask


# ---------------------------------------------------------------------- 11. where the data came from


def test_a_run_records_the_data_directory_it_read_from_the_environment(shared_data, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    monkeypatch.setenv("AEVB_DATA_DIR", str(shared_data))
    assert (
        call(
            [
                "train",
                "--dataset",
                "frey",
                *FAST,
                "--latent-dim",
                "2",
                "--max-samples",
                "1000",
                "--step-size",
                "0.01",
                "--out",
                run,
            ]
        )
        == 0
    )
    assert json.loads((run / "config.json").read_text())["data"]["data_dir"] == str(shared_data.resolve())
    monkeypatch.delenv("AEVB_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    code, out, err = run_cli(capsys, ["evaluate", run, "--num-points", "20", "--json"])
    assert code == 0, err
    assert json.loads(out)["dataset"] == "frey"


# ----------------------------------------------------------------------------------- 12. smaller


@pytest.mark.parametrize("delay", [0.3, 0.7, 1.2, 2.0])  # (in its first ~0.1 s, Python's own start-up)
def test_ctrl_c_while_starting_up_ends_in_one_line(tmp_path, delay):
    # (the child's SIGINT is not ignored, even in a test run started in the background: conftest.py)
    process = subprocess.Popen(
        [sys.executable, "-m", "aevb.console", "train", *SMALL, "--max-samples", "1e6", "--out", str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_run_whose_sigint_is_ignored_trains_on_through_ctrl_c_and_stops_on_sigterm(tmp_path):
    # `aevb train ... &` in a script: the shell ignores SIGINT for background jobs, so that Ctrl-C at
    # the terminal stops the script and not them. The run honours that during training as Python
    # does while it starts up (it once stopped there, and trained on before its first step).
    def started_in_background(run: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "aevb.console", "train", *SMALL, "--max-samples", "1e6"]
            + ["--checkpoint-every", "20", "--out", str(run)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
        deadline, checkpoint = time.monotonic() + 120, run / "checkpoints" / "latest.json"
        while not checkpoint.is_file() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        return process

    process = started_in_background(tmp_path / "run")
    try:
        assert process.poll() is None, process.communicate()[1]  # training: a checkpoint was taken
        process.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert process.poll() is None, process.communicate()[1]  # still training: Ctrl-C was not for it
        process.send_signal(signal.SIGTERM)  # what stops it: a checkpoint, one line, 128 + SIGTERM
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_stop_on_signal_leaves_an_ignored_signal_ignored_and_catches_the_others():
    from aevb.runs.process import StopOnSignal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopOnSignal() as signalled:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert not signalled()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert signalled() and signalled.received == signal.SIGTERM
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_reproduce_with_parallel_jobs_ends_in_one_line_and_keeps_both_checkpoints(shared_data, tmp_path):
    # Ctrl-C reaches the whole process group: each job saves a checkpoint and raises
    # TrainingInterrupted, which crosses back to the parent by pickling (it once failed to
    # unpickle there, and the parent died in a BrokenProcessPool traceback).
    out = tmp_path / "fig2"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aevb.console",
            "reproduce",
            "fig2",
            "--budget",
            "1e7",
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
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    runs = [out / "frey-z2-aevb", out / "frey-z2-wake-sleep"]
    try:
        deadline = time.monotonic() + 120
        # Past the step-size trials (a stop there keeps nothing: they start again) to a checkpoint.
        while (
            not all((run / "checkpoints" / "latest.json").is_file() for run in runs)
            and time.monotonic() < deadline
            and process.poll() is None
        ):
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        _, err = process.communicate(timeout=120)
    finally:  # a hung parent or job must not outlive the test
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "interrupted: frey-z2-aevb at " in err and ", frey-z2-wake-sleep at " in err, err  # each run named
    assert "checkpoints saved" in err, err
    for run in runs:
        assert (run / "checkpoints" / "latest.json").is_file(), run


def test_the_meta_model_of_the_engine_check_imports_no_dynamo():
    # A model on the meta device (train_run checks the engine on one before writing anything) used
    # to draw its initial weights there, which imports torch._dynamo: about a second of start-up
    # in which Ctrl-C ended the process by SIGINT (exit -2) instead of in one line with 130.
    code = (
        "import sys, torch\n"
        "from aevb.models.vae import VAE, ModelConfig\n"
        "from aevb.models.full_vb import FullVBVAE\n"
        "with torch.device('meta'):\n"
        "    VAE(ModelConfig(data_dim=6, latent_dim=2, hidden_units=4))\n"
        "    FullVBVAE(ModelConfig(data_dim=6, latent_dim=2, hidden_units=4, decoder_posterior='gaussian'))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_full_disk_names_the_file_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real_fsync = os.fsync

    def disk_full_for_the_model(descriptor):  # the final model's (not the best model's, in run/best)
        written = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
        if "model.safetensors" in written.name and written.parent == run:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(descriptor)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell the files apart")
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", disk_full_for_the_model)
        code, out, err = run_cli(capsys, ["train", *SMALL, "--max-samples", "3000", "--out", run])
    assert_usage_error(code, out, err)
    assert f"No space left on device: {run / 'model.safetensors'}" in err
    assert f"aevb train --resume {run}" in err
    assert not list(run.glob(".model.safetensors.*"))  # no temporary left behind
    assert call(["train", "--resume", run, "--no-progress"]) == 0 and (run / "model.safetensors").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["train", *SMALL, "--max-samples", "2000", "--out", "{long}/run"],
        ["train", "--resume", "{long}"],
        ["train", "--resume", "{long}/run"],
    ],
)
def test_a_path_component_longer_than_the_system_allows_ends_in_one_line(tmp_path, capsys, command):
    # (issue 28, item 10: the resume hint of the OS error asked for the path's checkpoints again)
    long = tmp_path / ("x" * 300)
    code, out, err = run_cli(capsys, [part.format(long=long) for part in command])
    assert_usage_error(code, out, err)
    assert "File name too long" in err and "--resume" not in err


def test_ctrl_c_while_the_final_files_are_written_says_how_to_resume(tmp_path, monkeypatch, capsys):
    # (issue 28, item 17) The checkpoints are removed only once summary.json marks the run finished.
    from aevb.runs import fit

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(fit, "write_figures", ctrl_c)
        code, out, err = run_cli(capsys, ["train", *SMALL, "--max-samples", "2000", "--out", run])
    assert code == 130 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("aevb train: interrupted") and err.strip().endswith(f"aevb train --resume {run}"), err
    assert call(["train", "--resume", run, "--no-progress"]) == 0 and (run / "summary.json").exists()


@pytest.mark.parametrize(
    "option",
    [
        ["--max-samples", "5000"],
        ["--latent-dim", "5"],
        ["--hidden-units", "30"],
        ["--out", "elsewhere"],
        ["--seed", "0"],
    ],
)
def test_resume_refuses_options_it_would_ignore(tmp_path, monkeypatch, capsys, option):
    run = tmp_path / "run"
    _interrupted_run(monkeypatch, run)
    code, out, err = run_cli(capsys, ["train", "--resume", run, *option])
    assert_usage_error(code, out, err)
    assert option[0] in err


def test_a_run_that_ends_worse_than_its_untrained_model_says_so(tmp_path, capsys):
    import warnings

    from aevb.training import TrainingWarning

    with pytest.warns(TrainingWarning, match="below the untrained model's .* learned nothing"):
        code, out, err = run_cli(
            capsys,
            [
                "train",
                *SMALL[:4],
                "--step-size",
                "1e6",
                "--eval-subset",
                "100",
                "--max-samples",
                "20000",
                "--no-progress",
                "--threads",
                "1",
                "--out",
                tmp_path / "run",
            ],
        )
    assert code == 0, err
    with warnings.catch_warnings(record=True) as caught:
        code, out, err = run_cli(capsys, ["train", *SMALL, "--max-samples", "20000", "--out", tmp_path / "good"])
    assert code == 0 and not [w for w in caught if "learned nothing" in str(w.message)], err


def _diverging_run(capsys, run: Path) -> tuple[int, str, str, list]:
    """A run whose step size is far too large: three rollbacks, then it gives up."""
    with pytest.warns(TrainingWarning, match="rollback") as rollbacks:  # each halves the step size first
        code, out, err = run_cli(
            capsys,
            [
                "train",
                "--hidden-units",
                "50",
                "--latent-dim",
                "5",
                "--max-samples",
                "2e5",
                "--threads",
                "1",
                "--step-size",
                "60",
                "--log-variance-bound",
                "0",
                "--engine",
                "autograd",
                "--eval-subset",
                "200",
                "--no-progress",
                "--out",
                run,
            ],
        )
    return code, out, err, list(rollbacks)


def test_after_divergence_the_message_says_overwrite_is_needed(tmp_path, capsys):
    code, out, err, rollbacks = _diverging_run(capsys, tmp_path / "run")
    assert len(rollbacks) == 3 and "step size 30" in str(rollbacks[0].message)
    assert_usage_error(code, out, err)
    assert "diverged" in err and "--overwrite" in err


def test_resuming_a_diverged_run_says_it_diverged_instead_of_diverging_again(tmp_path, capsys):
    import warnings

    run = tmp_path / "run"
    _diverging_run(capsys, run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_cli(capsys, ["train", "--resume", run])
    assert_usage_error(code, out, err)
    assert not [w for w in caught if "rollback" in str(w.message)]
    assert f"{run} is a diverged run: training diverged at" in err and "smaller --step-size" in err
    assert (
        call(
            [
                "train",
                "--hidden-units",
                "8",
                "--max-samples",
                "2000",
                "--step-size",
                "0.01",
                "--eval-subset",
                "100",
                "--no-progress",
                "--threads",
                "1",
                "--out",
                run,
                "--overwrite",
            ]
        )
        == 0
    )
    assert not (run / "diverged.json").exists()  # the new run is no diverged one


def test_compare_says_which_runs_are_unfinished_or_diverged(finished_run, tmp_path, monkeypatch, capsys):
    diverged, unfinished = tmp_path / "diverged", tmp_path / "unfinished"
    _diverging_run(capsys, diverged)
    _interrupted_run(monkeypatch, unfinished, after_checks=150)
    code, out, err = run_cli(capsys, ["compare", finished_run, diverged, unfinished])
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert lines["finished"].endswith("finished") and lines["diverged"].endswith("diverged")
    samples = json.loads((unfinished / "metrics.jsonl").read_text().splitlines()[-1])["samples"]
    assert lines["unfinished"].endswith(f"unfinished: {100 * samples / 30000:.0f}% of 30,000")
    code, out, err = run_cli(capsys, ["compare", finished_run, diverged, unfinished, "--json"])
    assert [(row["status"], row["planned_samples"]) for row in json.loads(out)] == [
        ("finished", 2000),
        ("diverged", 200000),
        ("unfinished", 30000),
    ]


@pytest.mark.parametrize(
    "cause, words",
    [
        ("data", "huge.npy) reach 1e+30 in magnitude: rescale them"),
        ("init", "--init-std 1e+30 makes the untrained model's outputs overflow"),
    ],
)
@pytest.mark.parametrize("step_size", [[], ["--step-size", "0.01"]])  # chosen (§5) or given
def test_a_run_that_cannot_train_names_the_cause_not_the_step_size(tmp_path, capsys, cause, words, step_size):
    import numpy as np

    values = np.random.default_rng(0).random((300, 12)).astype(np.float32)
    if cause == "data":
        values *= 1e30
    np.save(tmp_path / "huge.npy", values)
    setting = ["--init-std", "1e30"] if cause == "init" else []
    code, out, err = run_cli(
        capsys,
        [
            "train",
            "--dataset",
            tmp_path / "huge.npy",
            "--hidden-units",
            "8",
            "--max-samples",
            "3000",
            "--eval-subset",
            "100",
            "--no-progress",
            "--threads",
            "1",
            *setting,
            *step_size,
            "--out",
            tmp_path / "run",
        ],
    )
    assert_usage_error(code, out, err)
    assert words in err and "training cannot start" in err and "smaller --step-size" not in err


@pytest.mark.parametrize(
    "version, words",
    [("1", "must be the number 1, found '1'"), (2, "has format version 2; this aevb reads format version 1")],
)
def test_a_run_format_of_the_wrong_type_or_number_is_explained(finished_run, tmp_path, capsys, version, words):
    run = shutil.copytree(finished_run, tmp_path / "run")
    _edit_json(run / "config.json", lambda config: config.update(format_version=version))
    code, out, err = run_cli(capsys, ["evaluate", run, "--num-points", "10"])
    assert_usage_error(code, out, err)
    assert words in err


@pytest.mark.parametrize("argv", [["evaluate"], ["sample"], ["compare"], ["train", "--resume"]])
def test_a_directory_that_holds_no_run_is_named_as_such(tmp_path, capsys, argv):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run_cli(capsys, [*argv, empty])
    assert_usage_error(code, out, err)
    assert f"{empty} is not a run directory: it has no config.json" in err, err
    assert list(empty.iterdir()) == []  # nothing written into it


# ------------------------------------------------------------------ probed in session 13


@pytest.mark.parametrize("field,value", [("samples", -1), ("steps", -5), ("samples", 10)])
def test_resume_refuses_a_checkpoint_with_hand_edited_counts(tmp_path, monkeypatch, capsys, field, value):
    """samples = 10 is below the evaluation points the checkpoint itself records."""
    run = tmp_path / "run"
    _interrupted_run(monkeypatch, run, after_checks=150)
    metrics_before = (run / "metrics.jsonl").read_text()
    assert metrics_before
    for state in (run / "checkpoints").glob("step-*/state.json"):
        _edit_json(state, lambda fields: fields.update({field: value}))
    code, out, err = run_cli(capsys, ["train", "--resume", run, "--no-progress"])
    assert_usage_error(code, out, err)
    assert "checkpoint" in err and (run / "metrics.jsonl").read_text() == metrics_before


def test_resume_without_any_checkpoint_says_it_trains_the_run_again(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _interrupted_run(monkeypatch, run, after_checks=150)
    measured = (run / "metrics.jsonl").read_text().splitlines()
    shutil.rmtree(run / "checkpoints")
    with pytest.warns(TrainingWarning, match=f"{len(measured)} evaluation points but no checkpoint"):
        assert call(["train", "--resume", run, "--no-progress"]) == 0
    # The same seeded run again: its first evaluation points come back as they were.
    again = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["train_bound"] for line in again[: len(measured)]] == [
        json.loads(line)["train_bound"] for line in measured
    ]


def test_overwrite_with_settings_that_cannot_train_keeps_the_old_run(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = sorted(path.name for path in run.iterdir())
    code, out, err = run_cli(capsys, ["train", "--out", run, "--overwrite", "--algorithm", "mcem", "--no-progress"])
    assert_usage_error(code, out, err)
    assert "step size" in err and sorted(path.name for path in run.iterdir()) == before


@pytest.mark.parametrize(
    "option",
    [
        ["--k", "10"],
        ["--prior-mixture", "0.5"],
        ["--parameter-draws", "4"],
        ["--hmc-samples", "8"],
        ["--leapfrog-steps", "3"],
    ],
)
def test_an_evaluate_option_that_would_change_nothing_is_refused(finished_run, capsys, option):
    code, out, err = run_cli(capsys, ["evaluate", finished_run, *option])
    assert_usage_error(code, out, err)
    assert "applies only with --" in err


def test_hmc_with_too_few_samples_for_its_gaussian_is_refused(finished_run, capsys):
    """3 latent dimensions: L = 4 would fit a singular covariance (log p(x) came out at +10⁵ nats)."""
    code, out, err = run_cli(capsys, ["evaluate", finished_run, "--hmc", "--hmc-samples", "4", "--num-points", "2"])
    assert_usage_error(code, out, err)
    assert "--hmc-samples = 4 is too few" in err and "J + 2 = 5" in err


@pytest.mark.parametrize("command", [["sample", "{run}", "--num", "4"], ["compare", "{run}"]])
def test_an_output_file_that_exists_is_kept_unless_overwrite_is_given(finished_run, tmp_path, capsys, command):
    argv = [part.format(run=finished_run) for part in command]
    kept = tmp_path / "figure.png"
    kept.write_bytes(b"not to be lost")
    code, out, err = run_cli(capsys, [*argv, "--out", kept])
    assert_usage_error(code, out, err)
    assert "exists" in err and "--overwrite" in err and kept.read_bytes() == b"not to be lost"
    assert call([*argv, "--out", kept, "--overwrite"]) == 0
    assert kept.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("command", [["train"], ["reproduce", "fig4"], ["sample", "RUN"], ["compare", "RUN"]])
def test_an_empty_output_path_is_refused(capsys, command):
    code, out, err = run_cli(capsys, [*command, "--out", ""])
    assert_usage_error(code, out, err)
    assert "empty" in err


@pytest.mark.parametrize("command", [["evaluate"], ["sample"], ["train", "--resume"]])
def test_a_file_given_for_a_run_directory_says_which_directory_is_the_run(finished_run, capsys, command):
    code, out, err = run_cli(capsys, [*command, finished_run / "config.json"])
    assert_usage_error(code, out, err)
    assert f"is a file, not a run directory; its run directory is {finished_run}" in err


def test_a_partial_config_file_takes_the_defaults_for_what_it_leaves_out(tmp_path, capsys):
    path = tmp_path / "partial.json"
    for content in ({"model": {"latent_dim": 5}}, {"model": {"latent_dim": 5}, "training": {}, "data": {}}):
        path.write_text(json.dumps(content))
        code, out, err = run_cli(capsys, ["train", "--config", path, "--print-config"])
        assert code == 0, err
        printed = json.loads(out)
        assert printed["model"]["latent_dim"] == 5 and printed["training"]["max_samples"] == 1_000_000
        assert printed["data"]["dataset"] == "mnist-sample" and printed["data"]["pixel_divisor"] is None


@pytest.mark.parametrize(
    "content,words",
    [
        ({"modle": {"latent_dim": 5}}, "partial.json: unknown sections ['modle']"),
        ({"model": {"latent_dims": 5}}, "partial.json: model has unknown keys"),
        ({"data": {"dataset": 5}}, "partial.json: data: dataset must be a string"),
    ],
)
def test_a_config_file_with_a_misspelt_or_mistyped_setting_is_refused_naming_it(tmp_path, capsys, content, words):
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(content))
    code, out, err = run_cli(capsys, ["train", "--config", path, "--out", tmp_path / "run"])
    assert_usage_error(code, out, err)
    assert words in err and "positional argument" not in err
    assert not (tmp_path / "run").exists()
