"""The models shipped in models/ (scripts/ship_models.py) load, and score what models/scores.json
says they scored: the published numbers they stand behind can be checked by anyone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_cli import call

from aevb import VAE

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
SCORES = json.loads((MODELS / "scores.json").read_text()) if (MODELS / "scores.json").exists() else {}
DATA = ROOT.parent / "shared" / "data"


def test_every_shipped_model_is_in_the_scores_and_small():
    shipped = sorted(p.name for p in MODELS.iterdir() if p.is_dir()) if MODELS.is_dir() else []
    assert shipped == sorted(SCORES)
    total = sum(f.stat().st_size for name in shipped for f in (MODELS / name).iterdir())
    assert total < 12e6  # a few MB in all: the repository carries them


@pytest.mark.parametrize("name", sorted(SCORES))
def test_a_shipped_model_loads_and_rescores_to_its_recorded_bound(name, capsys, tmp_path):
    model = VAE.from_pretrained(MODELS / name)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    card = (MODELS / name / "README.md").read_text()
    assert f'from_pretrained("models/{name}")' in card  # the repository's path, not the shipping machine's
    record = json.loads((MODELS / name / "model.json").read_text())
    assert record["run"]["data"]["dataset"] in ("mnist", "frey")  # where the data come from again
    if not DATA.is_dir():
        pytest.skip("the data sets are not beside the repository (../shared/data)")
    capsys.readouterr()
    copy = Path(shutil.copytree(MODELS / name, tmp_path / name))  # (evaluate keeps its evaluations there)
    argv = ["evaluate", copy, "--samples", "1", "--json", "--no-progress", "--data-dir", DATA]
    assert call(argv) == 0
    result = json.loads(capsys.readouterr().out)
    # The same z draws (a fixed seed) on the same images: the same number, to float rounding.
    assert result["test_bound"] == pytest.approx(SCORES[name]["test_bound_one_sample"], abs=1e-3)


@pytest.mark.parametrize("name", sorted(name for name, score in SCORES.items() if "quick_nll" in score))
def test_a_shipped_protocol_model_rescores_its_recorded_log_likelihood_on_a_subset(name, capsys, tmp_path):
    """The table's k = 5000 score takes minutes (`rescore_nll`); the same estimator with k = 100 on
    the first 100 protocol test images (binarised once, with a fixed seed) takes seconds."""
    if not DATA.is_dir():
        pytest.skip("the data sets are not beside the repository (../shared/data)")
    quick = SCORES[name]["quick_nll"]
    copy = Path(shutil.copytree(MODELS / name, tmp_path / name))
    argv = ["evaluate", copy, "--nll", "--k", quick["k"], "--num-points", quick["num_points"], "--json"]
    capsys.readouterr()
    assert call([*argv, "--no-progress", "--data-dir", DATA]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["log_likelihood"] == pytest.approx(quick["log_likelihood"], abs=1e-3)
    assert -SCORES[name]["negative_log_likelihood"] - 15 < result["log_likelihood"] < 0


@pytest.mark.parametrize("name", sorted(name for name, score in SCORES.items() if "negative_log_likelihood" in score))
def test_a_shipped_protocol_model_is_the_model_of_its_table_row(name):
    """The shipped directory re-scored to its table's number: the table's run, not another one."""
    budget = SCORES[name]["from"].partition("--budget ")[2].split()[0]
    table = ROOT / "benchmarks" / "results" / f"nll_binarized_mnist{'' if budget == '1' else f'_budget-{budget}'}.json"
    (row,) = [row for row in json.loads(table.read_text())["models"] if row["model"] == SCORES[name]["run"]]
    assert SCORES[name]["negative_log_likelihood"] == pytest.approx(row["negative_log_likelihood"], abs=1e-9)
