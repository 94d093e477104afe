"""The scripts in examples/ run as a user runs them (a fresh process each, tiny budgets) and write what
they say they write: each test checks the script's files against what it printed."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_example(name: str, work_dir: Path) -> str:
    """Run examples/NAME with WORK_DIR as its one argument; its stdout. Fails with its stderr."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), str(work_dir)],
        cwd=work_dir.parent,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[: len(PNG_SIGNATURE)] == PNG_SIGNATURE


def test_evaluate_and_compare_keeps_each_estimate_in_its_run_and_compare_shows_it(tmp_path):
    work_dir = tmp_path / "work"
    printed = run_example("evaluate_and_compare.py", work_dir)

    assert is_png(work_dir / "compare.png")
    for name in ("z2", "z5"):
        run_dir = work_dir / name
        (kept,) = [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()]
        assert kept["settings"]["log_likelihood_samples"] == 50 and kept["num_datapoints"] == 200
        log_likelihood = kept["log_likelihood"]
        assert math.isfinite(log_likelihood) and log_likelihood < 0
        # What the script printed from `aevb evaluate --json` is what the run kept ...
        assert (
            f"{run_dir}: bound {kept['test_bound']:.2f} ± {kept['test_bound_stderr']:.2f}, "
            f"log p(x) {log_likelihood:.2f} ± {kept['log_likelihood_stderr']:.2f} (k = 50)"
        ) in printed
        # ... and `aevb compare` reads it back from the run: its row ends with log p(x) and the status.
        (row,) = [line for line in printed.splitlines() if line.startswith(f"{name} (latent_dim=")]
        assert re.search(rf"\s{re.escape(f'{log_likelihood:.2f}')}\s+finished$", row), row


def test_own_image_folder_trains_on_the_png_files_it_wrote(tmp_path):
    work_dir = tmp_path / "work"
    printed = run_example("own_image_folder.py", work_dir)

    images = sorted((work_dir / "images").glob("*.png"))
    assert len(images) == 400 and all(is_png(path) for path in images)
    run_dir = work_dir / "run"
    assert (run_dir / "summary.json").is_file()  # written last: the run finished
    assert str(work_dir / "images") in (run_dir / "config.json").read_text()
    model = json.loads((run_dir / "model.json").read_text())["model"]
    assert model["data_dim"] == 28 * 28 and list(model["image_shape"])[-2:] == [28, 28]  # --image-size 28 28
    bounds = [json.loads(line)["train_bound"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(bound) for bound in bounds)
    assert is_png(run_dir / "samples.png") and f"samples: {run_dir / 'samples.png'}" in printed


def test_hub_and_export_writes_a_hub_directory_and_an_onnx_decoder_that_matches_it(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("huggingface_hub")
    import torch

    from aevb import VAE

    work_dir = tmp_path / "work"
    printed = run_example("hub_and_export.py", work_dir)

    hub_dir = work_dir / "hub"
    assert {"model.safetensors", "model.json", "README.md"} <= {path.name for path in hub_dir.iterdir()}
    assert "[More Information Needed]" not in (hub_dir / "README.md").read_text()
    assert "VAE.from_pretrained gives the same decoder: True" in printed
    # The exported file, run here on a batch size the script did not use, against the hub directory's model.
    model = VAE.from_pretrained(hub_dir)
    z = torch.randn(3, model.config.latent_dim, generator=torch.Generator().manual_seed(1))
    session = onnxruntime.InferenceSession(str(work_dir / "decoder.onnx"), providers=["CPUExecutionProvider"])
    (exported,) = session.run(None, {session.get_inputs()[0].name: z.numpy()})
    with torch.no_grad():
        expected = model.decode(z).mean.numpy()
    assert exported.shape == expected.shape and abs(exported - expected).max() <= 1e-5
