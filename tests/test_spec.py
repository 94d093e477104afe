"""The run's typed specification (aevb.runs.spec) and its one preflight (aevb.training.preflight):
settings from defaults, a file and flags become one RunSpec; --print-config's output read back
with --config is the same run; every check runs once per run."""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings

import pytest
import torch

import aevb.training.preflight
from aevb.cli import main
from aevb.cli.commands import NOT_SETTINGS
from aevb.cli.parser import _build_parser
from aevb.errors import AevbError
from aevb.models.config import ModelConfig
from aevb.models.vae import VAE
from aevb.runs import DataConfig, ModelSpec, RunOptions, RunSpec, load_data, resolved_config, train_run
from aevb.runs.spec import DATA_GIVEN, SECTIONS, settings_of_run_config
from aevb.training import TrainConfig, Trainer
from aevb.training.algorithms import make_algorithm
from aevb.training.preflight import run_preflight
from aevb.training.reporting import TrainingWarning


def test_partial_settings_take_the_library_defaults_for_everything_else():
    spec = RunSpec.from_settings({"model": {"latent_dim": 3}, "training": {"step_size": 0.02}})
    assert spec.model == ModelSpec(latent_dim=3)
    assert spec.training == TrainConfig(step_size=0.02)
    assert (spec.data, spec.algorithm, spec.run) == (DataConfig(), "aevb", RunOptions())
    assert RunSpec.from_settings({}) == RunSpec()


def test_the_model_spec_has_every_model_setting_but_those_the_data_give():
    model_settings = {field.name for field in dataclasses.fields(ModelConfig)}
    spec_settings = {field.name for field in dataclasses.fields(ModelSpec)}
    assert spec_settings == model_settings - set(DATA_GIVEN) | {"conditional"}
    # Its fixed defaults are ModelConfig's (one owner); the others wait for the data.
    defaults = {field.name: field.default for field in dataclasses.fields(ModelConfig)}
    for name in spec_settings - {"conditional", "hidden_units", "likelihood", "sigmoid_mean"}:
        assert getattr(ModelSpec(), name) == defaults[name], name


@pytest.mark.parametrize(
    "settings, where, message",
    [
        ({"modle": {}}, None, "unknown sections ['modle']"),
        ({"model": {"latent_dims": 3}}, None, "unknown model settings ['latent_dims']"),
        ({"model": {"latent_dim": "3"}}, None, "model: latent_dim must be an integer, got '3'"),
        ({"model": {"latent_dim": "3"}}, "cfg.json", "cfg.json: model: latent_dim must be an integer, got '3'"),
        ({"training": 5}, "cfg.json", "cfg.json: training must be a mapping"),
        ({"algorithm": "gibbs"}, None, "unknown algorithm 'gibbs'"),
        ({"run": {"loggers": ["nope"]}}, None, "unknown logger 'nope'"),
        ({"run": {"device": "tpu"}}, None, "unknown device 'tpu'"),
        ({"model": {"decoder_posterior_init_std": 0.5}}, None, "applies to `algorithm` full-vb only"),
        ({"data": {"train_limit": 0}}, None, "`train_limit` must be a positive integer"),
    ],
)
def test_bad_settings_are_one_line_errors_naming_the_setting(settings, where, message):
    with pytest.raises(AevbError, match=None) as refused:
        RunSpec.from_settings(settings, where=where)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_pair_without_a_closed_form_kl_defaults_to_estimator_a_unless_one_is_given():
    with pytest.warns(TrainingWarning, match="no closed form; training with estimator A"):
        spec = RunSpec.from_settings({"model": {"posterior": "cauchy", "prior": "student-t"}})
    assert spec.training.estimator == "A"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # given: nothing to say
        given = RunSpec.from_settings(
            {"model": {"posterior": "cauchy", "prior": "student-t"}, "training": {"estimator": "IWAE"}}
        )
    assert given.training.estimator == "IWAE"
    assert RunSpec.from_settings({"model": {"posterior": "laplace", "prior": "laplace"}}).training.estimator == "B"


def test_the_model_is_resolved_against_the_data_as_section_5_says(shared_data):
    frey = load_data(DataConfig("frey", str(shared_data)))
    model = ModelSpec(latent_dim=2).resolve(frey)
    assert (model.hidden_units, model.likelihood, model.sigmoid_mean, model.data_dim) == (200, "gaussian", True, 560)
    mnist = load_data(DataConfig("mnist-sample"))
    model = ModelSpec().resolve(mnist, {"decoder_posterior": "gaussian"})
    assert (model.hidden_units, model.likelihood, model.sigmoid_mean, model.image_shape) == (
        500,
        "bernoulli",
        False,
        (28, 28),
    )
    assert model.decoder_posterior == "gaussian"  # what the algorithm needs comes last
    assert ModelSpec(conditional=True).resolve(mnist).num_classes == 10
    assert ModelSpec.of_model(ModelSpec(conditional=True, hidden_units=8).resolve(mnist)).resolve(mnist) == ModelSpec(
        conditional=True, hidden_units=8
    ).resolve(mnist)


def test_print_config_read_back_as_a_config_is_the_same_run():
    spec = RunSpec.from_settings(
        {
            "model": {"latent_dim": 3, "hidden_units": [16, 8], "activation": "relu"},
            "training": {"max_samples": 5000, "seed": 3},
            "algorithm": "wake-sleep",
            "run": {"threads": 1, "checkpoint_every": 50},
        }
    )
    printed = json.loads(json.dumps(resolved_config(spec)))
    again = RunSpec.from_settings(settings_of_run_config(printed, "printed.json"), where="printed.json")
    assert json.loads(json.dumps(resolved_config(again))) == printed
    assert again.run == spec.run and again.algorithm == "wake-sleep"


def test_every_option_of_aevb_train_names_a_setting_of_the_spec_or_is_no_setting():
    parser = _build_parser()
    subcommands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    dests = {action.dest for action in subcommands.choices["train"]._actions if action.option_strings} - {"help"}
    for dest in dests - set(NOT_SETTINGS) - {"algorithm"}:
        section, _, name = dest.partition(".")
        assert name in {field.name for field in dataclasses.fields(SECTIONS[section])}, dest
    # --latent-dim goes to the spec's model section in one hop: the parser's dest is its place there.
    assert "model.latent_dim" in dests and "training.step_size" in dests


def test_cli_flags_override_a_partial_config_file(tmp_path, capsys):
    config = tmp_path / "partial.json"
    config.write_text(json.dumps({"model": {"latent_dim": 4, "hidden_units": 12}, "training": {"seed": 9}}))
    assert main(["train", "--config", str(config), "--latent-dim", "6", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["model"]["latent_dim"], printed["model"]["hidden_units"], printed["training"]["seed"]) == (6, 12, 9)


def _count_calls(monkeypatch, module, names):
    counts = dict.fromkeys(names, 0)
    for name in names:
        original = getattr(module, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    return counts


def test_a_run_checks_everything_once_before_it_writes(tmp_path, monkeypatch):
    checks = ("check_distributable", "fit_to_budget", "require_training_step_memory", "require_trainable_values")
    counts = _count_calls(monkeypatch, aevb.training.preflight, checks)
    spec = RunSpec(
        model=ModelSpec(latent_dim=2, hidden_units=8),
        training=TrainConfig(max_samples=1000, selection_steps=2, eval_subset=50, first_eval=500),
        run=RunOptions(progress=False, threads=1),
    )
    train_run(spec, tmp_path / "run")
    assert counts == {
        "check_distributable": 1,
        "fit_to_budget": 1,
        "require_training_step_memory": 1,
        "require_trainable_values": 3,
    }  # each of the three splits once


def test_a_trainer_refuses_the_preflight_of_another_run():
    data = torch.rand(50, 6)
    config = TrainConfig(max_samples=100, step_size=0.01)
    model = VAE(ModelConfig(data_dim=6, latent_dim=2, hidden_units=4))
    algorithm = make_algorithm("aevb", config)
    checked = run_preflight(model.config, config, algorithm, data.device, data.shape[0])
    Trainer(model, data, config, algorithm=algorithm, preflight=checked)  # this run's: taken as it is
    with pytest.raises(AevbError, match="`preflight` was made for another"):
        Trainer(model, data[:40], config, algorithm=algorithm, preflight=checked)
    with pytest.raises(AevbError, match="`preflight` was made for another"):
        Trainer(
            VAE(ModelConfig(data_dim=6, latent_dim=3, hidden_units=4)),
            data,
            config,
            algorithm=algorithm,
            preflight=checked,
        )


def test_a_trainer_without_a_preflight_runs_it_itself():
    data = torch.rand(50, 6)
    model = VAE(ModelConfig(data_dim=6, latent_dim=2, hidden_units=4))
    with pytest.raises(AevbError, match="no lower bound to choose a step size by"):
        Trainer(model, data, TrainConfig(max_samples=100), algorithm=make_algorithm("mcem", TrainConfig()))
    trainer = Trainer(model, data, TrainConfig(max_samples=100, batch_size=20, selection_steps=50))
    assert trainer.config.selection_steps == 4  # fitted to the budget: (100 - 1) // 20
    with pytest.raises(AevbError, match="NaN or infinite"):
        Trainer(model, torch.full((5, 6), float("nan")), TrainConfig(max_samples=100))


def test_the_help_names_each_value_by_its_setting_not_its_section(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    assert "--latent-dim LATENT_DIM" in help_text and "--step-size STEP_SIZE" in help_text
    assert "MODEL." not in help_text and "TRAINING." not in help_text and "RUN." not in help_text


def test_a_partial_yaml_config_takes_the_defaults_and_flags_override_it(tmp_path, capsys):
    config = tmp_path / "partial.yaml"
    config.write_text("model:\n  latent_dim: 4\n  hidden_units: [12, 6]\ntraining:\n  seed: 9\n  step_size: 0.02\n")
    assert main(["train", "--config", str(config), "--seed", "3", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["model"]["latent_dim"], printed["model"]["hidden_units"]) == (4, [12, 6])
    assert (printed["training"]["seed"], printed["training"]["step_size"]) == (3, 0.02)
    assert printed["training"]["max_samples"] == TrainConfig().max_samples and printed["model"]["data_dim"] == 784


def test_print_config_as_yaml_read_back_is_the_same_run(tmp_path, capsys):
    flags = ["--latent-dim", "3", "--hidden-units", "16,8", "--algorithm", "wake-sleep", "--threads", "1"]
    assert main(["train", *flags, "--print-config", "yaml"]) == 0
    (tmp_path / "printed.yml").write_text(capsys.readouterr().out)
    assert main(["train", *flags, "--print-config"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert main(["train", "--config", str(tmp_path / "printed.yml"), "--print-config", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == as_json


@pytest.mark.parametrize(
    "text, words",
    [
        ("model:\n  latent_dim: [3\n", "not valid YAML at line 3"),
        ("- model\n- training\n", "does not hold a YAML mapping"),
        ("model:\n  1: 2\n", "model has a setting whose name is no string"),
        ("model: !!python/object/apply:os.system ['touch PWNED']\n", "not valid YAML at line 1"),
        ("training:\n  max_samples: 1e6\n", "training: max_samples must be an integer or null, got '1e6'"),
        ("modle:\n  latent_dim: 3\n", "unknown sections ['modle']"),
    ],
)
def test_a_bad_yaml_config_is_one_line_naming_the_file(tmp_path, capsys, text, words):
    config = tmp_path / "bad.yaml"
    config.write_text(text.replace("PWNED", str(tmp_path / "pwned")))
    code = main(["train", "--config", str(config), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(config) in err and words in err, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "pwned").exists()
