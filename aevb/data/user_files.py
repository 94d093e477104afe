"""A user's own data files: a ``.npy`` array (loaded, or streamed from the memory-mapped file), an
``.npz`` archive, a folder of images; split by a seeded permutation where they bring no split."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import AevbError
from .arrays import read_npy, read_npz
from .container import Dataset, _make
from .image_folder import read_image_folder
from .images import USER_PIXEL_DIVISOR, image_features
from .sources import NpyDataset, as_rows
from .splits import USER_SPLIT_SEED, holdout_size, permutation_split


def load_user_data(
    path: Path,
    named: Sequence[str],
    pixel_divisor: float | None,
    *,
    stream: bool = False,
    image_size: tuple[int, int] | None = None,
    split_seed: int | None = None,
) -> Dataset:
    """The data of a user's file or folder ``path`` (see :func:`aevb.data.load_dataset`), its
    errors naming the ``named`` datasets a user may have meant instead."""
    key = os.fspath(path)
    divisor = USER_PIXEL_DIVISOR if pixel_divisor is None else float(pixel_divisor)
    seed = USER_SPLIT_SEED if split_seed is None else _split_seed(split_seed)
    known = ", ".join(named)
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
