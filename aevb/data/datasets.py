"""The :class:`Dataset` container, the named datasets with their splits, and :func:`load_dataset`.

See the package docstring of :mod:`aevb.data` for the datasets, files and splits.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aevb.errors import AevbError

from ..image_shape import image_channels, normalize_image_shape
from .arrays import read_npy, read_npz
from .download import DATASET_SUBDIRS, REMOTE_FILES, fetch_file, sha256_file
from .formats import read_amat_binary, read_frey_mat, read_mnist_images, read_mnist_labels
from .image_folder import read_image_folder
from .images import USER_PIXEL_DIVISOR, check_pixel_divisor, image_features
from .sources import NpyDataset, StreamedRows, as_rows
from .splits import FREY_SPLIT_SEED, USER_SPLIT_SEED, holdout_size, permutation_split

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


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset split into train/valid/test, each a float32 matrix with one example a row.

    Attributes:
        name: ``"mnist"``, ``"binarized-mnist"``, ``"frey"``, ``"mnist-sample"`` or the stem of
            the user's file.
        train, valid, test: float32 contiguous tensors of shape ``(N_split, D)``, or rows of that
            shape read from a file as needed (:class:`~aevb.data.sources.StreamedRows`, ``stream``).
        image_shape: ``(H, W)`` with ``H * W == D`` when examples are grey images ((28, 28)
            for MNIST, (28, 20) for Frey Face), ``(C, H, W)`` with ``C * H * W == D`` for colour
            images of C = 3 (RGB) or 4 (RGBA) channels, each row the image flattened channels
            first (:mod:`aevb.image_shape`); ``None`` when unknown.
        is_binary: True iff every value in all three splits is exactly 0 or 1.
        source: one line saying where the data was read from.
        train_labels, valid_labels, test_labels: int64 tensors ``(N_split,)`` or ``None``.
        pixel_divisor: 256 or 255 where the files held uint8 grey levels k, stored as k / divisor;
            ``None`` for data that were not grey levels (binarized MNIST, float arrays).
    """

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    image_shape: tuple[int, ...] | None
    is_binary: bool
    source: str
    train_labels: torch.Tensor | None = None
    valid_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    pixel_divisor: float | None = None  # uint8 grey level k became k / pixel_divisor; None: not grey levels

    def __post_init__(self) -> None:
        dims = set()
        for split in ("train", "valid", "test"):
            x = getattr(self, split)
            if not isinstance(x, (torch.Tensor, StreamedRows)) or x.ndim != 2 or x.dtype != torch.float32:
                raise ValueError(f"Dataset.{split} must be a 2-D float32 tensor or streamed rows")
            dims.add(x.shape[1])
            labels = getattr(self, f"{split}_labels")
            if labels is not None and (labels.dtype != torch.int64 or labels.shape != (x.shape[0],)):
                raise ValueError(f"Dataset.{split}_labels must be int64 of shape ({x.shape[0]},)")
        if len(dims) != 1:
            raise ValueError("Dataset splits must have the same number of columns")
        object.__setattr__(
            self, "image_shape", normalize_image_shape(self.image_shape, dims.pop(), "Dataset.image_shape")
        )

    @property
    def channels(self) -> int | None:
        """C, the channels of each image: 1 (grey), 3 (RGB) or 4 (RGBA); None without an image shape."""
        return None if self.image_shape is None else image_channels(self.image_shape)

    @property
    def data_dim(self) -> int:
        """D, the number of values per example (784 for MNIST, 560 for Frey Face)."""
        return int(self.train.shape[1])

    def to(self, device: torch.device | str) -> "Dataset":
        """A copy with all tensors (data and labels) on ``device``."""
        moved = {
            field: getattr(self, field).to(device)
            for field in ("train", "valid", "test", "train_labels", "valid_labels", "test_labels")
            if getattr(self, field) is not None
        }
        return dataclasses.replace(self, **moved)

    def __repr__(self) -> str:
        sizes = "/".join(str(int(getattr(self, s).shape[0])) for s in ("train", "valid", "test"))
        return (
            f"Dataset(name={self.name!r}, train/valid/test={sizes}, D={self.data_dim}, "
            f"image_shape={self.image_shape}, is_binary={self.is_binary}, "
            f"labels={self.train_labels is not None}, source={self.source!r})"
        )


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


def _is_binary(*arrays: np.ndarray) -> bool:
    return all(bool(((a == 0) | (a == 1)).all()) for a in arrays)


def _as_features(array: np.ndarray, divisor: float) -> np.ndarray:
    """Flatten ``(N, ...)`` to float32 ``(N, D)``; uint8 grey levels are divided by ``divisor``."""
    return image_features(array, pixel_divisor=divisor)[0]


def _make(
    name: str,
    splits: Sequence[np.ndarray],
    image_shape: tuple[int, ...] | None,
    source: str,
    labels: Sequence[np.ndarray | None] = (None, None, None),
    is_binary: bool | None = None,
    pixel_divisor: float | None = None,
) -> Dataset:
    """Build a Dataset from float32 ``(N, D)`` numpy splits; ``is_binary`` is computed unless
    the reader already guarantees it."""
    train, valid, test = (torch.from_numpy(np.ascontiguousarray(s, dtype=np.float32)) for s in splits)
    tl, vl, sl = (None if y is None else torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)) for y in labels)
    return Dataset(
        name=name,
        train=train,
        valid=valid,
        test=test,
        image_shape=image_shape,
        is_binary=_is_binary(*splits) if is_binary is None else is_binary,
        source=source,
        train_labels=tl,
        valid_labels=vl,
        test_labels=sl,
        pixel_divisor=pixel_divisor,
    )


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


def _too_small(path: Path, n: int) -> AevbError:
    return AevbError(f"{path}: only {n} training rows; need at least 10 to hold out 10% each for valid/test")


def _holdout_split(path: Path, n: int, parts: int, seed: int) -> list[np.ndarray]:
    """Index arrays of the training rows and of ``parts`` held-out splits of ``n // 10`` rows each."""
    h = holdout_size(n)
    if h < 1:
        raise _too_small(path, n)
    return permutation_split(n, (n - parts * h, *([h] * parts)), seed)


def _load_npy(path: Path, divisor: float, seed: int) -> Dataset:
    array = read_npy(path)
    x, image_shape = image_features(array, pixel_divisor=divisor, name=f"{path}: the array")
    parts = _holdout_split(path, x.shape[0], 2, seed)
    return _make(
        path.stem,
        [x[idx] for idx in parts],
        image_shape,
        f"numpy file {path}",
        pixel_divisor=divisor if array.dtype == np.uint8 else None,
    )


def _load_npy_streamed(path: Path, divisor: float, seed: int) -> Dataset:
    """A .npy file's splits as rows read from the memory-mapped file as needed (the same split as
    :func:`_load_npy`); one scan checks whether the values are binary."""
    array = NpyDataset(path).array
    _, image_shape = image_features(array[:1], pixel_divisor=divisor, name=f"{path}: the array")
    parts = _holdout_split(path, array.shape[0], 2, seed)
    train, valid, test = (as_rows(NpyDataset(path, rows), f"{path}", pixel_divisor=divisor) for rows in parts)
    return Dataset(
        name=path.stem,
        train=train,
        valid=valid,
        test=test,
        image_shape=image_shape,
        is_binary=all(split.is_binary() for split in (train, valid, test)),
        source=f"numpy file {path}, read as needed",
        pixel_divisor=divisor if array.dtype == np.uint8 else None,
    )


def _load_npz(path: Path, divisor: float, seed: int) -> Dataset:
    data = read_npz(path)
    train, train_labels = data["train"], data.get("train_labels")
    missing = [s for s in ("valid", "test") if s not in data]
    if missing:
        parts = _holdout_split(path, train.shape[0], len(missing), seed)
        for split, idx in zip(missing, parts[1:]):
            data[split] = train[idx]
            if train_labels is not None:
                data[f"{split}_labels"] = train_labels[idx]
        data["train"] = train[parts[0]]
        if train_labels is not None:
            data["train_labels"] = train_labels[parts[0]]
    splits = ("train", "valid", "test")
    features = [image_features(data[s], pixel_divisor=divisor, name=f"{path}: array '{s}'") for s in splits]
    carved = f" (valid/test carved from train: {', '.join(missing)})" if missing else ""
    return _make(
        path.stem,
        [x for x, _ in features],
        features[0][1],
        f"numpy archive {path}{carved}",
        [data.get(f"{s}_labels") for s in splits],
        pixel_divisor=divisor if train.dtype == np.uint8 else None,
    )


def _load_folder(path: Path, divisor: float, seed: int, image_size: tuple[int, int] | None) -> Dataset:
    images, labels, classes = read_image_folder(path, image_size)
    x, image_shape = image_features(images, pixel_divisor=divisor, channels_last=True, name=str(path))
    parts = _holdout_split(path, x.shape[0], 2, seed)
    count = f"{x.shape[0]} images" + (f" in {len(classes)} class folders" if classes else "")
    return _make(
        path.resolve().name,
        [x[idx] for idx in parts],
        image_shape,
        f"image folder {path} ({count})",
        [None if labels is None else labels[idx] for idx in parts],
        pixel_divisor=divisor,
    )


# --------------------------------------------------------------------------- entry point


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
    divisor = USER_PIXEL_DIVISOR if pixel_divisor is None else float(pixel_divisor)
    seed = USER_SPLIT_SEED if split_seed is None else _split_seed(split_seed)
    path = Path(key).expanduser()
    known = ", ".join(DATASET_NAMES)
    if not path.exists():
        raise AevbError(
            f"{key}: no such dataset, file or folder; known datasets: {known}; or give a .npy/.npz file "
            "or a folder of images"
        )
    if path.is_dir() and stream:
        raise AevbError(f"{path}: a folder of images is loaded into memory; `stream` reads a .npy file as needed")
    if path.is_dir():
        return _load_folder(path, divisor, seed, _image_size(image_size))
    if image_size is not None:
        raise AevbError(f"`image_size` resizes the images of a folder; {path} is a file")
    if not path.is_file():
        raise AevbError(f"{path}: not a file; give a .npy/.npz file, a folder of images or one of: {known}")
    suffix = path.suffix.lower()
    if stream and suffix != ".npy":
        raise AevbError(f"{path}: only .npy files can be streamed (`stream`); save the array with numpy.save")
    if suffix == ".npy" and stream:
        return _load_npy_streamed(path, divisor, seed)
    if suffix == ".npy":
        return _load_npy(path, divisor, seed)
    if suffix == ".npz":
        return _load_npz(path, divisor, seed)
    raise AevbError(
        f"{path}: unsupported file type {suffix or '(none)'!r}; expected .npy or .npz, a folder of images, "
        f"or one of: {known}"
    )


def _split_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise AevbError(f"`split_seed` must be a whole number ≥ 0, got {seed!r}")
    return int(seed)


def _image_size(size: object) -> tuple[int, int] | None:
    if size is None:
        return None
    try:
        height, width = (int(side) for side in size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise AevbError(f"`image_size` must be two whole numbers (height, width), got {size!r}") from None
    if min(height, width) < 1 or (height, width) != tuple(size):  # type: ignore[arg-type]
        raise AevbError(f"`image_size` must be two positive whole numbers (height, width), got {size!r}")
    return height, width
