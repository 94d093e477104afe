"""The :class:`Dataset` container: a data set's train/valid/test splits, their image shape and labels,
and where they came from."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..image_shape import image_channels, normalize_image_shape
from .images import image_features
from .sources import StreamedRows

__all__ = ["Dataset"]


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
