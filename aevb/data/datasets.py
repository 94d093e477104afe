"""The named datasets with their splits, and :func:`load_dataset` (the :class:`Dataset` container:
:mod:`aevb.data.container`; a user's own files: :mod:`aevb.data.user_files`).

See the package docstring of :mod:`aevb.data` for the datasets, files and splits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aevb.errors import AevbError

from .container import Dataset, _as_features, _make
from .download import DATASET_SUBDIRS, REMOTE_FILES, fetch_file, sha256_file
from .formats import read_amat_binary, read_frey_mat, read_mnist_images, read_mnist_labels
from .images import check_pixel_divisor
from .splits import FREY_SPLIT_SEED, permutation_split
from .user_files import load_user_data

__all__ = ["Dataset", "DATASET_NAMES", "EMBEDDED_DIR", "load_dataset", "resolve_data_dir"]

DATASET_NAMES = ("mnist-sample", "mnist", "binarized-mnist", "frey")

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"

MNIST_TRAIN_SIZE = 50_000  # the classic mnist.pkl.gz split of the 60000 training images
# Grey levels k in 0..255 become k / PAPER_PIXEL_DIVISOR: the authors' mnist.pkl.gz held k/256, and
# their Frey Face loader divided by 256 too. User files and the IWAE protocol divide by 255
# (aevb.data.images.USER_PIXEL_DIVISOR).
PAPER_PIXEL_DIVISOR = 256.0
MNIST_TRAIN_FILE_SIZE = 60_000
FREY_SIZES = (1565, 200, 200)  # train, valid, test of the 1965 faces
SAMPLE_TRAIN_FILE_SIZE, SAMPLE_TEST_SIZE, SAMPLE_VALID_SIZE = 10_000, 2_000, 1_000


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$AEVB_DATA_DIR``, else
    ``$XDG_CACHE_HOME/aevb`` (``~/.cache/aevb`` when XDG_CACHE_HOME is unset). Not created here."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get("AEVB_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return cache_root()


def cache_root() -> Path:
    """aevb's cache: ``$XDG_CACHE_HOME/aevb`` (``~/.cache/aevb`` when XDG_CACHE_HOME is unset)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "aevb"


# --------------------------------------------------------------------------- helpers


def _source(description: str, paths: Sequence[Path]) -> str:
    folders = {p.parent for p in paths}
    if len(folders) == 1:
        return f"{description} in {folders.pop()} ({', '.join(p.name for p in paths)})"
    return f"{description}: {', '.join(str(p) for p in paths)}"


def _locate(dataset: str, data_dir: Path, download: bool) -> list[Path]:
    """Paths of the files of a named dataset, in the order of ``REMOTE_FILES[dataset]``.

    Each file is looked for, gzipped or not, first in ``<data_dir>/<subdir>/`` then directly
    in ``<data_dir>/``. Missing files are downloaded into ``<data_dir>/<subdir>/`` when
    ``download`` is true; otherwise they are reported all at once.
    """
    subdir = data_dir / DATASET_SUBDIRS[dataset]
    found: list[Path | None] = []
    for remote in REMOTE_FILES[dataset]:
        base = remote.filename.removesuffix(".gz")
        candidates = [folder / name for folder in (subdir, data_dir) for name in (base + ".gz", base)]
        found.append(next((c for c in candidates if c.is_file()), None))
    missing = [r for r, f in zip(REMOTE_FILES[dataset], found) if f is None]
    if missing and not download:
        names = ", ".join(r.filename for r in missing) + " (plain or gzipped)"
        if data_dir.exists() and not data_dir.is_dir():
            raise AevbError(
                f"{dataset}: the data directory {data_dir} is a file; pass `data_dir` or set "
                "AEVB_DATA_DIR naming a directory that holds the files, or add `download`"
            )
        if not data_dir.exists():  # say so: a mistyped --data-dir or AEVB_DATA_DIR is the likely cause
            raise AevbError(
                f"{dataset}: the data directory {data_dir} does not exist; pass `data_dir` or set "
                "AEVB_DATA_DIR naming one that holds the files, or add `download`"
            )
        raise AevbError(
            f"{dataset}: {names} not found in {subdir} or {data_dir}; "
            f"pass `data_dir`, set AEVB_DATA_DIR, or add `download`"
        )
    return [
        f if f is not None else fetch_file(r.urls, subdir / r.filename, r.sha256, size=r.size)
        for r, f in zip(REMOTE_FILES[dataset], found)
    ]


# --------------------------------------------------------------------------- named datasets


def _read_mnist_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_mnist_images(images_path)
    labels = read_mnist_labels(labels_path)
    if labels.shape[0] != images.shape[0]:
        raise AevbError(f"{labels_path}: {labels.shape[0]} labels but {images_path.name} has {images.shape[0]} images")
    return images, labels


def _load_mnist(data_dir: Path, download: bool, divisor: float) -> Dataset:
    paths = _locate("mnist", data_dir, download)
    train_x, train_y = _read_mnist_pair(paths[0], paths[1])
    test_x, test_y = _read_mnist_pair(paths[2], paths[3])
    if train_x.shape[0] != MNIST_TRAIN_FILE_SIZE:
        raise AevbError(
            f"{paths[0]}: {train_x.shape[0]} images, expected the {MNIST_TRAIN_FILE_SIZE} of the MNIST training file"
        )
    x, n = _as_features(train_x, divisor), MNIST_TRAIN_SIZE
    return _make(
        "mnist",
        (x[:n], x[n:], _as_features(test_x, divisor)),
        (28, 28),
        _source("MNIST IDX files", paths),
        (train_y[:n], train_y[n:], test_y),
        pixel_divisor=divisor,
    )


def _load_binarized_mnist(data_dir: Path, download: bool, divisor: float) -> Dataset:
    paths = _locate("binarized-mnist", data_dir, download)
    splits = [read_amat_binary(p, 784).astype(np.float32) for p in paths]
    source = _source("binarized MNIST AMAT files", paths)
    return _make("binarized-mnist", splits, (28, 28), source, is_binary=True)  # 0/1 by the reader


def _load_frey(data_dir: Path, download: bool, divisor: float) -> Dataset:
    (path,) = _locate("frey", data_dir, download)
    faces = read_frey_mat(path)
    if faces.shape[0] != sum(FREY_SIZES):
        raise AevbError(f"{path}: {faces.shape[0]} faces, expected {sum(FREY_SIZES)} (frey_rawface.mat)")
    x = _as_features(faces, divisor)
    parts = permutation_split(x.shape[0], FREY_SIZES, FREY_SPLIT_SEED)
    return _make(
        "frey", [x[idx] for idx in parts], (28, 20), _source("Frey Face MAT file", [path]), pixel_divisor=divisor
    )


#: The files of the embedded MNIST sample, each verified against SHA256SUMS at every load.
EMBEDDED_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _verify_embedded() -> None:
    sums = EMBEDDED_DIR / "SHA256SUMS"
    try:
        lines = sums.read_text().split("\n")
    except OSError as exc:
        raise AevbError(f"{sums}: cannot read the embedded sample's checksums ({exc}); reinstall aevb") from None
    listed = set()
    for line in filter(None, (text.strip() for text in lines)):
        digest, _, name = line.partition("  ")
        if not name:
            raise AevbError(f"{sums}: not a checksum line: {line[:60]!r}; reinstall aevb")
        path = EMBEDDED_DIR / name
        if not path.is_file() or sha256_file(path) != digest:
            raise AevbError(f"{path}: missing or corrupt (SHA-256 mismatch with {sums.name}); reinstall aevb")
        listed.add(name)
    unchecked = sorted(set(EMBEDDED_FILES) - listed)
    if unchecked:  # a file the list leaves out would load unverified
        raise AevbError(f"{sums} lists no checksum for {', '.join(unchecked)}; reinstall aevb")


def _load_mnist_sample(divisor: float) -> Dataset:
    _verify_embedded()
    d = EMBEDDED_DIR
    train_x, train_y = _read_mnist_pair(d / "train-images-idx3-ubyte.gz", d / "train-labels-idx1-ubyte.gz")
    test_x, test_y = _read_mnist_pair(d / "t10k-images-idx3-ubyte.gz", d / "t10k-labels-idx1-ubyte.gz")
    if train_x.shape[0] != SAMPLE_TRAIN_FILE_SIZE or test_x.shape[0] != SAMPLE_TEST_SIZE:
        raise AevbError(f"{d}: embedded sample has unexpected sizes; reinstall aevb")
    x, n = _as_features(train_x, divisor), SAMPLE_TRAIN_FILE_SIZE - SAMPLE_VALID_SIZE
    return _make(
        "mnist-sample",
        (x[:n], x[n:], _as_features(test_x, divisor)),
        (28, 28),
        f"MNIST sample embedded in the aevb package ({d})",
        (train_y[:n], train_y[n:], test_y),
        pixel_divisor=divisor,
    )


# --------------------------------------------------------------------------- user files


def load_dataset(
    name_or_path: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = False,
    pixel_divisor: float | None = None,
    stream: bool = False,
    image_size: tuple[int, int] | None = None,
    split_seed: int | None = None,
) -> Dataset:
    """Load a named dataset, a user's ``.npy``/``.npz`` file or a folder of images, split into
    train/valid/test.

    Args:
        name_or_path: one of :data:`DATASET_NAMES` (a name wins over a file of the same name),
            the path of a ``.npy`` or ``.npz`` file, or of a folder of PNG/JPEG images
            (:mod:`aevb.data.image_folder`: grey or RGB, optionally one subfolder per class).
        data_dir: folder holding the named datasets' files (see :func:`resolve_data_dir`);
            ignored for ``mnist-sample`` (embedded in the package) and for user files.
        download: fetch missing files of a named dataset (checksum-verified). Without it the
            network is never touched.
        pixel_divisor: uint8 grey levels k become k / pixel_divisor. Default: 256 for the named
            datasets (:data:`PAPER_PIXEL_DIVISOR`, the authors' mnist.pkl.gz and Frey Face), 255 for
            user files and folders; the IWAE protocol (:mod:`aevb.experiments.nll`) asks for 255.
        image_size: ``(H, W)`` pixels that every image of a folder is resized to; None: a folder's
            images must all have one size. Only for folders.
        split_seed: seed of the random permutation that holds out valid and test rows of user
            data (a folder, an ``.npy`` file, an ``.npz`` file without them); None:
            :data:`~aevb.data.splits.USER_SPLIT_SEED`. The named datasets keep their standard
            splits, so it is an error with them.
        stream: read a ``.npy`` file memory-mapped, its rows as training needs them
            (:class:`~aevb.data.sources.StreamedRows`), instead of loading it: data larger than
            memory. Only ``.npy`` files stream.

    Returns:
        A :class:`Dataset` of float32 ``(N, D)`` splits.

    Raises:
        AevbError: unknown name, missing or corrupt files, unusable arrays or images, a setting
            that does not apply to this data.
    """
    check_pixel_divisor(pixel_divisor)
    key = os.fspath(name_or_path)
    if isinstance(name_or_path, str) and key in DATASET_NAMES:
        if stream:
            raise AevbError(f"{key} is loaded into memory; `stream` reads a user's .npy file as needed")
        for setting, value in (("image_size", image_size), ("split_seed", split_seed)):
            if value is not None:
                raise AevbError(f"`{setting}` applies to user data (a folder or numpy file), not to {key}")
        divisor = PAPER_PIXEL_DIVISOR if pixel_divisor is None else float(pixel_divisor)
        if key == "mnist-sample":
            return _load_mnist_sample(divisor)
        directory = resolve_data_dir(data_dir)
        loader = {"mnist": _load_mnist, "binarized-mnist": _load_binarized_mnist, "frey": _load_frey}[key]
        return loader(directory, download, divisor)
    return load_user_data(
        Path(key).expanduser(),
        DATASET_NAMES,
        pixel_divisor,
        stream=stream,
        image_size=image_size,
        split_seed=split_seed,
    )
