"""Files of a run edited by hand, and settings read from files (issue 28, items 3, 4, 7, 8, 9, 14 and
19): every bad value ends in one line that names the file and the field, exit status 2, nothing
already written lost — and a configuration file reruns the same model. Each test here failed on the
code before its fix."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_cli import assert_usage_error, call, run_cli
from test_robustness import _edit_json, _interrupted_run

import aevb
from aevb.data import datasets
from aevb.errors import AevbError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("hand-edits") / "stopped"
    with pytest.MonkeyPatch.context() as monkeypatch:
        # (shuffled: the checkpoint then holds a permutation for the edits below to damage)
        _interrupted_run(monkeypatch, run, "--minibatches", "shuffled", after_checks=150)
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def _edit_states(run: Path, edit) -> None:
    """``edit`` applied to the text of every checkpoint's state.json (a fallback to an older
    checkpoint would otherwise hide the edit)."""
    for path in (run / "checkpoints").glob("step-*/state.json"):
        path.write_text(edit(path.read_text()))


def _edit_fields_with(edit):
    def apply(text: str) -> str:
        fields = json.loads(text)
        edit(fields)
        return json.dumps(fields)

    return apply


def _edit_tensors(run: Path, edit) -> None:
    for path in (run / "checkpoints").glob("step-*/state.safetensors"):
        tensors = load_file(path)
        edit(tensors)
        save_file(tensors, path)


def _first_weight(tensors: dict) -> str:
    return sorted(name for name in tensors if name.startswith("model."))[0]


# ------------------------------------------------------------- 3. hand-edited checkpoint state

CHECKPOINT_EDITS = {  # name → (edit of the run, words of the error)
    "samples 1e400": (
        lambda run: _edit_states(run, lambda text: re.sub(r'"samples": \d+', '"samples": 1e400', text, count=1)),
        "state.json: samples must be an integer, got inf",
    ),
    "optimizer state a list": (
        lambda run: _edit_states(run, _edit_fields_with(lambda fields: fields["optimizer"].update(state=[1, 2]))),
        "the optimiser state must map",
    ),
    "running_sum of 3": (
        lambda run: _edit_tensors(run, lambda t: t.update(running_sum=torch.zeros(3))),
        "running_sum must be one number",
    ),
    "step_size -0.5": (
        lambda run: _edit_states(run, _edit_fields_with(lambda fields: fields.update(step_size=-0.5))),
        "step_size must be a positive number, got -0.5",
    ),
    "trials of strings": (
        lambda run: _edit_states(
            run, _edit_fields_with(lambda fields: fields.update(trials=[{"step_size": "x", "mean_bound": 1}]))
        ),
        "step_size must be a number",
    ),
}

RESUME_EDITS = {  # what only a resume reads
    "order out of range": (
        lambda run: _edit_tensors(run, lambda t: t["order"].__setitem__(-1, 10**6)),
        "no permutation",
    ),
    "order of floats": (
        lambda run: _edit_tensors(run, lambda t: t.update(order=t["order"].double())),
        "no permutation",
    ),
    "NaN weights": (
        lambda run: _edit_tensors(run, lambda t: t[_first_weight(t)].view(-1).__setitem__(0, float("nan"))),
        "NaN or infinite weights",
    ),
    "int32 weights": (
        lambda run: _edit_tensors(run, lambda t: t.update({_first_weight(t): t[_first_weight(t)].int()})),
        "as int32, but the model stores float32",
    ),
    "NaN optimiser state": (
        lambda run: _edit_tensors(run, lambda t: t["optimizer.0.sum"].view(-1).__setitem__(0, float("nan"))),
        "NaN, infinite or negative optimiser state (sum)",
    ),
    "optimiser slot missing": (
        lambda run: _edit_states(run, _edit_fields_with(lambda fields: fields["optimizer"]["state"]["0"].pop("sum"))),
        "lacks optimiser state ['sum']",
    ),
    "optimiser setting missing": (
        lambda run: _edit_states(
            run, _edit_fields_with(lambda fields: fields["optimizer"]["param_groups"][0].pop("eps"))
        ),
        "optimiser setting eps must be like",
    ),
    "optimiser group dropped": (
        lambda run: _edit_states(
            run, _edit_fields_with(lambda fields: fields["optimizer"]["param_groups"][0]["params"].pop())
        ),
        "optimiser groups of [7] parameters",
    ),
}


def _resume_refuses(run: Path, capsys, words: str) -> None:
    metrics = (run / "metrics.jsonl").read_text()
    code, out, err = run_cli(capsys, ["train", "--resume", run, "--no-progress"])
    assert_usage_error(code, out, err)
    assert words in err, err
    assert (run / "metrics.jsonl").read_text() == metrics and not (run / "model.safetensors").exists()


@pytest.mark.parametrize("name", CHECKPOINT_EDITS)
def test_a_hand_edited_checkpoint_is_refused_in_one_line_by_resume_evaluate_and_sample(
    stopped_run, tmp_path, capsys, name
):
    edit, words = CHECKPOINT_EDITS[name]
    run = _copy(stopped_run, tmp_path)
    edit(run)
    for argv in (
        ["evaluate", run, "--checkpoint", "--num-points", "10"],
        ["sample", run, "--checkpoint", "--num", "2", "--out", tmp_path / "samples.png"],
    ):
        code, out, err = run_cli(capsys, argv)
        assert_usage_error(code, out, err)
        assert words in err, err
    _resume_refuses(run, capsys, words)


@pytest.mark.parametrize("name", RESUME_EDITS)
def test_a_checkpoint_that_cannot_continue_the_run_is_refused_before_training(stopped_run, tmp_path, capsys, name):
    edit, words = RESUME_EDITS[name]
    run = _copy(stopped_run, tmp_path)
    edit(run)
    _resume_refuses(run, capsys, words)


def test_a_latest_json_of_the_wrong_types_is_ignored_as_a_missing_one(stopped_run, tmp_path):
    """Found by the fuzz test of tests/test_fuzz.py: the next checkpoint compared its bound with a list."""
    run = _copy(stopped_run, tmp_path)
    _edit_json(run / "checkpoints" / "latest.json", lambda latest: latest.update(best_valid_bound=[], best=3))
    assert call(["train", "--resume", run, "--no-progress"]) == 0


def test_evaluate_names_an_algorithm_that_is_no_name(finished_run, tmp_path, capsys):
    """Found by the fuzz test of tests/test_fuzz.py (a TypeError: unhashable type)."""
    run = _copy(finished_run, tmp_path)
    _edit_json(run / "config.json", lambda config: config.update(algorithm=[]))
    code, out, err = run_cli(capsys, ["evaluate", run, "--num-points", "5"])
    assert_usage_error(code, out, err)
    assert f"{run / 'config.json'}: algorithm must be a name, got []" in err


# ---------------------------------------------------------------------------- 4. the JSON readers

DEEP = '{"model": ' + "[" * 100_000 + "]" * 100_000 + "}"
DIGITS = '{"format_version": 1, "model": {"latent_dim": ' + "9" * 5000 + "}}"


@pytest.mark.parametrize(
    "text, words", [(DEEP, "nested too deeply"), (DIGITS, "thousands of digits")], ids=["nested", "digits"]
)
def test_json_beyond_the_parsers_limits_is_one_line_wherever_it_is_read(finished_run, tmp_path, capsys, text, words):
    config = tmp_path / "settings.json"
    config.write_text(text)
    for number, (file, argv) in enumerate(
        (
            ("settings.json", ["train", "--config", config, "--out", tmp_path / "new"]),
            ("model.json", ["evaluate", "{run}", "--num-points", "5"]),
            ("config.json", ["compare", "{run}"]),
            ("metrics.jsonl line 2", ["compare", "{run}"]),
        )
    ):
        run = Path(shutil.copytree(finished_run, tmp_path / f"run{number}"))
        if file.startswith("metrics"):
            lines = (run / "metrics.jsonl").read_text().splitlines()
            (run / "metrics.jsonl").write_text("\n".join([lines[0], text.replace("\n", ""), *lines[1:]]) + "\n")
        elif file != "settings.json":
            (run / file).write_text(text)
        code, out, err = run_cli(capsys, [str(part).format(run=run) for part in argv])
        assert_usage_error(code, out, err)
        assert file in err and words in err, err
    with pytest.raises(AevbError, match=words):
        aevb.load(tmp_path / "run1")  # (its model.json)


@pytest.mark.parametrize(
    "line, words",
    [
        ('{"samples": "x"}', "samples must be an integer, got 'x'"),
        ('{"samples": 100, "train_bound": "oops"}', "train_bound must be a number"),
    ],
)
def test_a_metrics_line_of_the_wrong_types_is_one_line_in_compare_and_resume(
    stopped_run, tmp_path, capsys, line, words
):
    run = _copy(stopped_run, tmp_path)
    with open(run / "metrics.jsonl", "a") as metrics:
        metrics.write(line + "\n")
    code, out, err = run_cli(capsys, ["compare", run])
    assert_usage_error(code, out, err)
    assert "metrics.jsonl line" in err and words in err, err
    _resume_refuses(run, capsys, words)


def test_a_config_that_is_a_fifo_is_refused_not_waited_for(tmp_path):
    fifo = tmp_path / "settings.json"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-m", "aevb", "train", "--config", str(fifo)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and done.stderr.strip() == f"aevb train: error: {fifo} is not a regular file"


# ------------------------------------------------------- 7, 8, 9. --config values of a new run


def _settings_file(run: Path, path: Path, edit) -> Path:
    config = json.loads((run / "config.json").read_text())
    edit(config)
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("seed", [2**64, -1])
def test_a_config_seed_the_flag_would_refuse_is_refused_and_leaves_no_run(finished_run, tmp_path, capsys, seed):
    path = _settings_file(finished_run, tmp_path / "settings.json", lambda c: c["training"].update(seed=seed))
    code, out, err = run_cli(capsys, ["train", "--config", path, "--out", tmp_path / "new", "--no-progress"])
    assert_usage_error(code, out, err)
    assert f"settings.json: training: seed must be a whole number in 0 ... 2**63 - 1, got {seed}" in err, err
    assert not (tmp_path / "new").exists()


def test_a_config_without_initialisation_trains_the_same_model_every_time(finished_run, tmp_path):
    path = _settings_file(finished_run, tmp_path / "settings.json", lambda c: c["training"].update(initialise=False))
    for name in ("first", "second"):
        assert call(["train", "--config", path, "--out", tmp_path / name, "--no-progress"]) == 0
    first, second = (load_file(tmp_path / name / "model.safetensors") for name in ("first", "second"))
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_a_config_that_downloads_is_printed_without_downloading_and_downloads_into_its_own_data_dir(
    finished_run, tmp_path, capsys, monkeypatch
):
    fetched = []

    def fetch(urls, path, sha256, size=None):
        fetched.append(Path(path))
        raise AevbError("offline")

    monkeypatch.setattr(datasets, "fetch_file", fetch)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("AEVB_DATA_DIR", raising=False)
    own = tmp_path / "frey-data"
    path = _settings_file(
        finished_run,
        tmp_path / "settings.json",
        lambda c: (
            c["data"].update(dataset="frey", data_dir=str(own), download=True),
            c["model"].update(data_dim=560, image_shape=[28, 20], likelihood="gaussian"),
        ),
    )
    code, out, err = run_cli(capsys, ["train", "--config", path, "--print-config"])
    assert_usage_error(code, out, err)
    assert "downloads nothing" in err and fetched == [] and not (tmp_path / "cache").exists() and not own.exists()
    code, out, err = run_cli(capsys, ["train", "--config", path, "--out", tmp_path / "new", "--no-progress"])
    assert_usage_error(code, out, err)
    assert "offline" in err and fetched and fetched[0].is_relative_to(own) and not (tmp_path / "cache").exists()


# -------------------------------------------------- 14. a value from a file is named there, not as a flag


@pytest.mark.parametrize("command", ["resume", "config"])
def test_a_bad_value_in_a_file_names_the_file_and_field_not_a_flag_never_typed(stopped_run, tmp_path, capsys, command):
    run = _copy(stopped_run, tmp_path)
    _edit_json(run / "config.json", lambda c: c["training"].update(batch_size=-5))
    argv = ["train", "--resume", run] if command == "resume" else ["train", "--config", run / "config.json"]
    code, out, err = run_cli(capsys, [*argv, "--no-progress"])
    assert_usage_error(code, out, err)
    assert f"{run / 'config.json'}: training: batch_size must be a positive integer, got -5" in err, err
    assert "--batch-size" not in err


# ------------------------------------------------------------------------- 19. weights of another dtype


def test_weights_of_a_dtype_the_model_does_not_store_are_refused(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    weights = load_file(run / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name].to(torch.int32)
    save_file(weights, run / "model.safetensors")
    with pytest.raises(AevbError, match=f"stores {re.escape(name)} as int32, but the model stores float32"):
        aevb.load(run)
    code, out, err = run_cli(capsys, ["evaluate", run, "--num-points", "5"])
    assert_usage_error(code, out, err)
    assert "as int32" in err
