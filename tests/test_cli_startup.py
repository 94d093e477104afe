"""The command line answers ``--help`` and ``--version`` without importing torch (issue 30, item 5),
and the help it gives that way still quotes the library's own defaults and choices."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aevb import choices
from aevb.cli.flags import _in_flags
from aevb.cli.parser import DEFERRED_OPTIONS, _build_parser
from aevb.engines import ENGINE_CHOICES, ENGINES
from aevb.models.config import ModelConfig
from aevb.models.families import FAMILIES
from aevb.runs.config_file import FORMATS
from aevb.runs.loggers import LOGGERS
from aevb.runs.spec import SECTIONS
from aevb.training import TrainConfig
from aevb.training.optimizers import OPTIMIZERS

#: What a help or version request must not wait for: each takes from a tenth of a second to seconds.
HEAVY = ("torch", "matplotlib", "numpy", "scipy", "PIL", "yaml", "safetensors")


def _imported_by(arguments: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -X importtime -m aevb ARGUMENTS``; its result and every module it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "aevb", *arguments], capture_output=True, text=True, timeout=120
    )
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return done, imported


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["--help"], "usage: aevb"),
        (["train", "--help"], "--latent-dim"),
        (["compare", "--help"], "usage: aevb compare"),
        (["--version"], "aevb "),
    ],
)
def test_help_and_version_import_no_torch(arguments, expected):
    done, imported = _imported_by(arguments)
    assert done.returncode == 0, done.stderr[-2000:]
    assert expected in done.stdout
    assert "aevb.cli.parser" in imported  # (the measurement saw the parser being imported)
    assert not {module.split(".")[0] for module in imported} & set(HEAVY), sorted(
        module for module in imported if module.split(".")[0] in HEAVY and "." not in module
    )


def test_a_command_still_imports_what_it_runs_on():
    # The deferred imports happen: a command that runs gets torch (here the error of a missing run).
    done, imported = _imported_by(["sample", "/nonexistent/run"])
    said = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert done.returncode == 2 and said == ["aevb sample: error: run directory /nonexistent/run not found"]
    assert "torch" in imported and "aevb.cli.commands" in imported


def _train_parser() -> argparse.ArgumentParser:
    parser = _build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return commands.parser_of("train")


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(action for action in parser._actions if flag in action.option_strings)


def _renderings(value) -> set[str]:
    """The ways the help may write ``value``."""
    if isinstance(value, tuple):
        return {",".join(map(str, value)), ", ".join(map(str, value))}
    found = {str(value)}
    if isinstance(value, float):
        found.add(f"{value:g}")
    if isinstance(value, int):
        found.add(f"{value:,}")
    return found


def test_train_help_quotes_the_library_defaults():
    train = _train_parser()
    checked = 0
    for action in train._actions:
        section, _, name = action.dest.partition(".")
        if section not in SECTIONS or name not in {field.name for field in dataclasses.fields(SECTIONS[section])}:
            continue
        default = next(field for field in dataclasses.fields(SECTIONS[section]) if field.name == name).default
        if section == "model" and default is None and name in {field.name for field in dataclasses.fields(ModelConfig)}:
            default = getattr(ModelConfig, name)  # a setting the data decide, ModelConfig's default otherwise
        if default in (None, (), dataclasses.MISSING) or isinstance(default, bool):
            continue  # the help says in words what happens (e.g. "default: all", "default: off", "none")
        quoted = re.search(r"\(default: (.*)", action.help, re.DOTALL)
        assert quoted, action.dest
        assert any(text in quoted.group(1) for text in _renderings(default)), (action.dest, default, action.help)
        checked += 1
    assert checked >= 20  # (the loop saw the options)
    library = TrainConfig()
    assert f"{library.max_samples:,}" in _option(train, "--max-samples").help
    candidates = ", ".join(f"{c:g}" for c in library.step_size_candidates)
    assert f"chosen from {candidates}" in _option(train, "--step-size").help


def test_the_torch_free_choices_are_the_registries():
    # Each registry is keyed by exactly the names the command line offers before loading it.
    assert tuple(ENGINES) == choices.ENGINE_NAMES and ENGINE_CHOICES == (choices.AUTO_ENGINE, *choices.ENGINE_NAMES)
    assert tuple(FAMILIES) == choices.FAMILY_NAMES
    assert tuple(LOGGERS) == choices.LOGGER_NAMES
    assert tuple(OPTIMIZERS) == choices.OPTIMIZER_NAMES
    train = _train_parser()
    assert tuple(_option(train, "--engine").choices) == ENGINE_CHOICES
    assert tuple(_option(train, "--posterior").choices) == tuple(FAMILIES) == tuple(_option(train, "--prior").choices)
    assert tuple(_option(train, "--logger").choices) == tuple(LOGGERS)
    assert tuple(_option(train, "--print-config").choices) == FORMATS


@pytest.mark.parametrize("command", sorted(DEFERRED_OPTIONS))
def test_a_deferred_command_gets_its_options_when_chosen(command, capsys):
    parser = _build_parser()
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args([command, "--help"])
    assert exit_.value.code == 0
    deferred_option = {"export": "--format"}.get(command, "--seed")  # (each quotes the library's default)
    assert deferred_option in capsys.readouterr().out


def test_library_errors_of_a_deferred_command_name_its_flags():
    # aevb.cli.flags reads the flags off the command's parser: it must see the deferred options too.
    assert _in_flags("`num_samples` must be a whole number", "evaluate") == "--samples must be a whole number"
    assert _in_flags("`num_samples` must be a whole number", "sample") == "--num must be a whole number"
    assert _in_flags("`hmc_samples` is too large", "evaluate") == "--hmc-samples is too large"


def test_the_start_up_benchmark_times_every_command_against_its_peers(tmp_path):
    out = tmp_path / "cli_startup.json"
    benchmark = Path(__file__).resolve().parents[1] / "benchmarks" / "cli_startup.py"
    done = subprocess.run(
        [sys.executable, str(benchmark), "--rounds", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["schema"] == "aevb-cli-startup/1" and report["rounds"] == 1
    commands = report["commands"]
    assert list(commands) == [
        "python -c pass",
        'python -c "import torch"',
        "aevb --version",
        "aevb --help",
        "aevb train --help",
    ]
    for name in ("aevb --version", "aevb --help", "aevb train --help"):
        timing = commands[name]
        assert timing["values"] == [timing["median"]] and timing["median"] > 0
        assert timing["over_python"] == timing["median"] / commands["python -c pass"]["median"]
        assert f"{name} " in done.stdout and "target < 0.3 s" in done.stdout
