"""Models out (issue 30, item 4): ``model.save_pretrained`` / ``VAE.from_pretrained``, a model card
written from the run, saved models read wherever a run is, and ``aevb export`` to ONNX and
TorchScript graphs that match the model."""

from __future__ import annotations

import json
import math
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch
from test_cli import call

import aevb
from aevb.errors import AevbError
from aevb.models import VAE, ModelConfig
from aevb.models.conditional import ConditionalVAE
from aevb.runs import export_run

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--hidden-units", "12", "--latent-dim", "2", "--selection-steps", "4", "--eval-subset", "200"]
TINY += ["--max-samples", "2000", "--no-progress", "--seed", "5"]
#: The graphs are traced with 2 rows (aevb.models.graphs.TRACE_BATCH); they are run with another number.
ROWS = 7
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny finished run, evaluated once with --nll (so its card has a test log p(x))."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert call(["train", *TINY, "--out", out]) == 0
    assert call(["evaluate", out, "--nll", "--k", "3", "--num-points", "40", "--samples", "2", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def saved(run, tmp_path_factory) -> Path:
    pytest.importorskip("huggingface_hub")
    out = tmp_path_factory.mktemp("saved") / "model"
    assert call(["export", run, "--format", "hub", "-o", out]) == 0
    return out


def _graph_outputs(path: Path, fmt: str, inputs: torch.Tensor) -> list[torch.Tensor]:
    """What the exported file computes on ``inputs``, run by onnxruntime or torch.jit.load."""
    if fmt == "onnx":
        onnxruntime = pytest.importorskip("onnxruntime")
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (name,) = [given.name for given in session.get_inputs()]
        return [torch.from_numpy(output) for output in session.run(None, {name: inputs.numpy()})]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # (torch 2.13 marks torch.jit deprecated)
        outputs = torch.jit.load(str(path))(inputs)
    return list(outputs) if isinstance(outputs, tuple) else [outputs]


def _reference(model: VAE, part: str, inputs: torch.Tensor) -> list[torch.Tensor]:
    """The model's own answer, read from its distributions: E[x|z] of p(x|z), or the mean and the
    log of the variance of q(z|x)."""
    with torch.no_grad():
        if part == "decoder":
            return [model.decode(inputs).mean]
        posterior = model.encode(inputs)
        return [posterior.mean, posterior.variance.log()]


def _max_difference(path: Path, fmt: str, model: VAE, part: str, generator: torch.Generator) -> float:
    width = model.config.latent_dim if part == "decoder" else model.config.data_dim
    inputs = torch.rand(ROWS, width, generator=generator) if part == "encoder" else torch.randn(ROWS, width)
    got, expected = _graph_outputs(path, fmt, inputs), _reference(model, part, inputs)
    assert [tuple(tensor.shape) for tensor in got] == [tuple(tensor.shape) for tensor in expected]
    return max(float((a - b).abs().max()) for a, b in zip(got, expected))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("part", ["decoder", "encoder"])
def test_an_exported_graph_computes_what_the_model_does_at_another_batch_size(run, tmp_path, fmt, part):
    if fmt == "onnx":
        pytest.importorskip("onnx")
    out = tmp_path / f"{part}.{fmt}"
    assert call(["export", run, "--format", fmt, "--part", part, "-o", out]) == 0
    difference = _max_difference(out, fmt, aevb.load(run, device="cpu"), part, torch.Generator().manual_seed(0))
    print(f"aevb export RUN --format {fmt} --part {part}: max |exported - model| = {difference:.2e}")
    assert difference <= TOLERANCE


@pytest.mark.parametrize("image_shape", [(12, 10), (3, 12, 10)], ids=["grey", "colour"])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_convolutional_gaussian_model_exports_from_a_saved_directory(tmp_path, fmt, image_shape):
    pytest.importorskip("huggingface_hub")
    if fmt == "onnx":
        pytest.importorskip("onnx")
    torch.manual_seed(1)
    config = ModelConfig(
        data_dim=math.prod(image_shape),
        latent_dim=3,
        hidden_units=6,
        likelihood="gaussian",
        sigmoid_mean=True,
        image_shape=image_shape,
        architecture="conv",
        conv_channels=(4, 5),
    )
    model = VAE(config).eval()
    model.save_pretrained(tmp_path / "conv")
    for part in ("decoder", "encoder"):
        out = export_run(tmp_path / "conv", format=fmt, part=part, out=tmp_path / f"{part}.{fmt}")
        assert _max_difference(out, fmt, model, part, torch.Generator().manual_seed(2)) <= TOLERANCE


def test_a_full_vb_decoder_exports_with_its_parameters_at_their_posterior_mean(tmp_path):
    pytest.importorskip("huggingface_hub")
    from aevb.models.full_vb import FullVBVAE

    model = FullVBVAE(ModelConfig(data_dim=10, latent_dim=3, hidden_units=8, decoder_posterior="gaussian"))
    model.save_pretrained(tmp_path / "full-vb")
    out = export_run(tmp_path / "full-vb", format="torchscript", part="decoder", out=tmp_path / "d.pt")
    z = torch.randn(ROWS, 3)
    with torch.no_grad(), model.decoder_parameters(model.mean_decoder_parameters()):
        expected = model.decode(z).mean  # p(x|z, θ = E_q[θ])
    assert float((_graph_outputs(out, "torchscript", z)[0] - expected).abs().max()) <= TOLERANCE


def test_what_cannot_be_exported_is_a_one_line_error(tmp_path):
    pytest.importorskip("huggingface_hub")
    conditional = ConditionalVAE(ModelConfig(data_dim=10, latent_dim=3, hidden_units=8, num_classes=4))
    conditional.save_pretrained(tmp_path / "conditional")
    with pytest.raises(AevbError, match="class label") as error:
        export_run(tmp_path / "conditional", format="torchscript", part="decoder", out=tmp_path / "c.pt")
    assert "\n" not in str(error.value) and not (tmp_path / "c.pt").exists()
    laplace = VAE(ModelConfig(data_dim=6, latent_dim=3, hidden_units=4, posterior="laplace", prior="laplace"))
    laplace.save_pretrained(tmp_path / "laplace")
    with pytest.raises(AevbError, match="'laplace', which has no mean and log-variance"):
        export_run(tmp_path / "laplace", format="torchscript", part="encoder", out=tmp_path / "e.pt")
    decoder = export_run(tmp_path / "laplace", format="torchscript", part="decoder", out=tmp_path / "d.pt")
    assert _max_difference(decoder, "torchscript", laplace, "decoder", torch.Generator()) <= TOLERANCE


def test_save_pretrained_and_from_pretrained_give_the_same_model(run, tmp_path):
    pytest.importorskip("huggingface_hub")
    model = aevb.load(run, device="cpu")
    model.save_pretrained(tmp_path / "saved")
    again = VAE.from_pretrained(tmp_path / "saved")
    assert type(again) is VAE and not again.training and again.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    x = torch.rand(5, model.config.data_dim)
    with torch.no_grad():
        assert torch.equal(again.reconstruct(x), model.reconstruct(x))
        assert torch.equal(again.encode(x).stddev, model.encode(x).stddev)
    assert again.run_record == model.run_record  # kept in model.json: the card is written again from it
    assert {path.name for path in (tmp_path / "saved").iterdir()} == {
        "model.safetensors",
        "model.json",
        "config.json",
        "README.md",
    }


def test_from_pretrained_builds_the_kind_of_model_that_was_saved(tmp_path):
    pytest.importorskip("huggingface_hub")
    conditional = ConditionalVAE(ModelConfig(data_dim=10, latent_dim=3, hidden_units=8, num_classes=4))
    conditional.save_pretrained(tmp_path / "conditional")
    loaded = VAE.from_pretrained(tmp_path / "conditional")
    assert type(loaded) is ConditionalVAE
    assert torch.equal(loaded.decoder.net.heads.weight, conditional.decoder.net.heads.weight)
    VAE(ModelConfig(data_dim=10, latent_dim=3, hidden_units=8)).save_pretrained(tmp_path / "plain")
    with pytest.raises(AevbError, match="no ConditionalVAE; load it with aevb.load"):
        ConditionalVAE.from_pretrained(tmp_path / "plain")


def test_the_card_is_written_from_the_run(run, saved):
    card = (saved / "README.md").read_text()
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())
    (evaluation,) = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
    assert "More Information Needed" not in card and "{{" not in card  # no placeholder, no template left
    assert card.startswith("---\nlibrary_name: aevb\n")
    for value in (summary["train_bound"], summary["valid_bound"], evaluation["log_likelihood"]):
        assert f"{value:.2f}" in card
    assert f"k = {evaluation['log_likelihood_samples']} on {evaluation['num_datapoints']} points" in card
    assert f"{summary['samples']:,}" in card and f"{summary['step_size']}" in card
    assert f"```sh\n{config['command']}\n```" in card and config["command"].startswith("aevb train")
    data = config["data"]
    assert f"{data['train_size']:,} train, {data['valid_size']:,} valid, {data['test_size']:,} test" in card
    assert data["source"] in card and f"k / {data['pixel_divisor']:g}" in card
    assert f"latent dimension J | {config['model']['latent_dim']} |" in card
    assert f"estimator | {config['training']['estimator']}, L = 1" in card


def test_the_card_says_how_the_images_were_binarised():
    """Dynamic binarisation (the log-likelihood protocol's) changes what the model was trained on."""
    from aevb.models.card import model_card

    config = ModelConfig(data_dim=784, latent_dim=2, hidden_units=8)
    record = {"training": {"optimizer": "adam", "batch_size": 20, "binarize": "dynamic"}, "summary": {"samples": 40}}
    assert "| binarisation | dynamic: a fresh Bernoulli draw of every image at every use |" in model_card(
        config, record
    )
    record["training"]["binarize"] = "none"
    assert "binarisation" not in model_card(config, record)


def test_a_model_saved_without_a_run_has_a_card_of_facts_only(tmp_path):
    pytest.importorskip("huggingface_hub")
    model = VAE(ModelConfig(data_dim=10, latent_dim=3, hidden_units=8))
    model.save_pretrained(tmp_path / "plain")
    card = (tmp_path / "plain" / "README.md").read_text()
    assert "## Architecture" in card and "## Training" not in card and "## Data" not in card
    assert "More Information Needed" not in card and f"{model.num_parameters():,}" in card
    # evaluate needs the data the run recorded, which this model has none of: one line
    assert call(["evaluate", tmp_path / "plain"]) == 2


def test_evaluate_sample_and_load_read_a_saved_model_as_they_read_its_run(run, saved, capsys, tmp_path):
    capsys.readouterr()
    options = ["--samples", "3", "--num-points", "50", "--seed", "4", "--json"]
    assert call(["evaluate", run, *options]) == 0
    from_run = json.loads(capsys.readouterr().out)
    assert call(["evaluate", saved, *options]) == 0
    from_saved = json.loads(capsys.readouterr().out)
    assert from_saved["test_bound"] == from_run["test_bound"] and from_saved["run"] == str(saved)
    assert call(["sample", saved, "--num", "4", "--out", tmp_path / "s.npy"]) == 0
    import numpy as np

    assert np.array_equal(
        np.load(tmp_path / "s.npy"), aevb.load(run, device="cpu").sample(4, torch.Generator().manual_seed(0)).numpy()
    )
    assert call(["sample", saved, "--checkpoint"]) == 2
    assert "keeps no checkpoints" in capsys.readouterr().err


def test_export_refuses_to_replace_a_run_or_other_files(run, saved, tmp_path, capsys):
    before = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}
    assert call(["export", saved, "--format", "hub", "-o", run]) == 2
    assert "holds an aevb run" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == before
    assert call(["export", run, "--format", "hub", "-o", saved]) == 2
    assert "holds a saved model; pass --overwrite" in capsys.readouterr().err
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    assert call(["export", run, "--format", "hub", "-o", tmp_path / "notes", "--overwrite"]) == 2
    assert "holds other files" in capsys.readouterr().err
    assert call(["export", run, "--format", "hub", "--part", "encoder", "-o", tmp_path / "x"]) == 2
    assert "--part applies to the graph formats" in capsys.readouterr().err


def test_without_huggingface_hub_the_methods_say_how_to_install_it(tmp_path, monkeypatch):
    from aevb.models import pretrained

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed
    pretrained._hub_adapter.cache_clear()
    try:
        model = VAE(ModelConfig(data_dim=10, latent_dim=3, hidden_units=8))
        with pytest.raises(AevbError, match=r"pip install 'aevb\[hub\]'"):
            model.save_pretrained(tmp_path / "saved")
        with pytest.raises(AevbError, match=r"pip install 'aevb\[hub\]'"):
            VAE.from_pretrained(tmp_path / "saved")
    finally:
        pretrained._hub_adapter.cache_clear()
    assert not (tmp_path / "saved").exists()


@pytest.mark.parametrize("name", ["missing/directory/model", "user/no-such-model"])
def test_a_model_neither_saved_here_nor_on_the_hub_is_a_one_line_error(tmp_path, monkeypatch, name):
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)  # no network: an empty cache of the Hub's
    with pytest.raises(AevbError, match=f"{name} is no saved model's directory, and the Hugging Face Hub gave none"):
        VAE.from_pretrained(name, cache_dir=tmp_path / "hub-cache")


def test_a_saved_model_copied_elsewhere_is_still_read(saved, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    (copy / "config.json").unlink()  # the Hub's configuration is not needed: model.json is aevb's
    assert aevb.load(copy, device="cpu").config == aevb.load(saved, device="cpu").config


def test_compare_shows_a_saved_model_with_its_runs_numbers(run, saved):
    from aevb.runs import compare_runs

    from_run, from_saved = compare_runs([run, saved])
    assert from_saved["status"] == "saved model" and from_run["status"] == "finished"
    for key in ("samples", "train_bound", "valid_bound", "test_log_likelihood", "test_log_likelihood_samples"):
        assert from_saved[key] == from_run[key] is not None
