"""Train on a folder of your own images.

    python examples/own_image_folder.py [WORK_DIR]      # default: runs/examples/own-image-folder

Stands in for your photographs or scans with 400 digits of the embedded MNIST sample, written as
32×32 grey PNG files into WORK_DIR/images/. `aevb train --dataset DIR` trains on every PNG or JPEG
file in a folder (grey or RGB), split into training, validation and test images by a seeded draw
recorded in the run; `--image-size H W` resizes every image to H×W (without it, all must share one
size). The run is an ordinary run directory: its samples.png shows what the model draws.

The budget is tiny (20,000 training samples) so that the script runs in seconds.
"""

import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from aevb.data import load_dataset

NUM_IMAGES = 400


def aevb(*args: str) -> None:
    """Run one `aevb` command (as `python -m aevb`, the same interpreter), echo it and its output."""
    print("$ aevb " + shlex.join(args), flush=True)
    result = subprocess.run([sys.executable, "-m", "aevb", *args], capture_output=True, text=True)
    print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        sys.exit(f"aevb {args[0]} failed: {result.stderr.strip()}")


def write_image_folder(folder: Path) -> None:
    """NUM_IMAGES digits of the embedded MNIST sample as 32×32 8-bit grey PNG files in ``folder``."""
    data = load_dataset("mnist-sample")
    height, width = data.image_shape
    # The sample's grey levels are k/256 (the authors' scaling); a PNG holds the integers k.
    pixels = np.rint(data.train[:NUM_IMAGES].numpy() * 256).clip(0, 255).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(pixels.reshape(-1, height, width)):
        Image.fromarray(image).resize((32, 32), Image.Resampling.BILINEAR).save(folder / f"digit-{index:04d}.png")
    print(f"wrote {NUM_IMAGES} PNG files of 32×32 pixels into {folder}")


def main(work_dir: Path) -> None:
    images, run_dir = work_dir / "images", work_dir / "run"
    write_image_folder(images)
    aevb(
        "train",
        *("--dataset", str(images), "--image-size", "28", "28"),
        *("--latent-dim", "5", "--hidden-units", "100", "--max-samples", "20000", "--step-size", "0.02"),
        *("--threads", "1", "--no-progress", "--out", str(run_dir), "--overwrite"),
    )
    with Image.open(run_dir / "samples.png") as samples:
        print(f"samples: {run_dir / 'samples.png'} ({samples.width}×{samples.height} pixels)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/examples/own-image-folder"))
