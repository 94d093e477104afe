"""Save a trained model the Hugging Face way, load it back, export its decoder to ONNX and run it.

    pip install -e ".[hub]" onnxruntime
    python examples/hub_and_export.py [WORK_DIR]      # default: runs/examples/hub-and-export

A small VAE trains on the embedded MNIST sample. `model.save_pretrained(DIR)` writes a hub directory
(aevb's model.safetensors and model.json, no pickle, and a model card generated from the run);
`VAE.from_pretrained(DIR)` loads it (a directory, or "user/name" on the Hugging Face Hub). Every
command that reads a run also reads such a directory: `aevb export DIR --format onnx --part decoder`
writes a graph from z (batch, Nz) to the decoder's mean, E[x|z], which onnxruntime runs without
torch or aevb. The script checks that the exported graph matches the model.
"""

import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import aevb
from aevb import VAE


def aevb_command(*args: str) -> None:
    """Run one `aevb` command (as `python -m aevb`, the same interpreter), echo it and its output."""
    print("$ aevb " + shlex.join(args), flush=True)
    result = subprocess.run([sys.executable, "-m", "aevb", *args], capture_output=True, text=True)
    print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        sys.exit(f"aevb {args[0]} failed: {result.stderr.strip()}")


def main(work_dir: Path) -> None:
    run_dir, hub_dir, onnx_file = work_dir / "run", work_dir / "hub", work_dir / "decoder.onnx"
    aevb_command(
        "train",
        *("--latent-dim", "5", "--hidden-units", "100", "--max-samples", "20000", "--step-size", "0.02"),
        *("--threads", "1", "--no-progress", "--out", str(run_dir), "--overwrite"),
    )

    model = aevb.load(run_dir, device="cpu")
    model.save_pretrained(hub_dir)
    print(f"saved {hub_dir}: {', '.join(sorted(path.name for path in hub_dir.iterdir()))}")
    card = (hub_dir / "README.md").read_text()
    print("model card, its first lines:")
    print("\n".join("    " + line for line in card.strip().splitlines()[:12]))

    loaded = VAE.from_pretrained(hub_dir)
    z = torch.randn(7, model.config.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model.decode(z).mean  # Bernoulli decoder: the pixel probabilities, (7, 784)
        same = torch.equal(reference, loaded.decode(z).mean)
    print(f"VAE.from_pretrained gives the same decoder: {same}")

    aevb_command("export", str(hub_dir), "--format", "onnx", "--part", "decoder", "-o", str(onnx_file))
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    (exported,) = session.run(None, {graph_input.name: z.numpy()})
    difference = float(np.abs(exported - reference.numpy()).max())
    print(f"onnxruntime on {onnx_file.name}: output {exported.shape}, max |onnx - torch| = {difference:.2e}")
    if difference > 1e-5:
        sys.exit("the exported decoder does not match the model")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/examples/hub-and-export"))
