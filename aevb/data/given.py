"""A user's own data, given in memory or as a dataset object, as a :class:`~aevb.data.Dataset` with
train/valid/test splits: what :func:`aevb.runs.train_run` trains on when it is handed an array, a
tensor, a torch Dataset or a DataLoader instead of a dataset it loads itself."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Subset

from ..errors import AevbError
from .datasets import Dataset
from .images import image_features
from .sources import as_rows, is_streamed
from .splits import USER_SPLIT_SEED, holdout_size, permutation_split

__all__ = ["dataset_of"]


def dataset_of(
    data: object,
    name: str = "data",
    *,
    pixel_divisor: float | None = None,
    split_seed: int = USER_SPLIT_SEED,
) -> Dataset:
    """``data`` as a :class:`Dataset` named ``name``.

    A :class:`Dataset` is returned as it is. Anything :func:`aevb.data.sources.as_rows` takes — an
    array or tensor of any real dtype ((N, D) rows or (N, H, W), (N, C, H, W), (N, H, W, C) images;
    uint8 grey levels k read as k / ``pixel_divisor``, default 255), a map-style torch Dataset (items
    ``x`` or ``(x, y)``) or a DataLoader over one — is split as a user's ``.npy`` file is: 10 % of the
    rows each for valid and test (rounded down), by a permutation seeded with ``split_seed``, each
    split in the original order. Arrays are held in memory; a Dataset's splits are read as needed.
    At least 10 rows are needed. Labels of (x, y) items are not kept.
    """
    if isinstance(data, Dataset):
        return data
    rows = as_rows(data, name, pixel_divisor=pixel_divisor)
    n, held_out = rows.shape[0], holdout_size(rows.shape[0])
    if held_out < 1:
        raise AevbError(f"`{name}` has {n} rows; at least 10 are needed to hold out 10% each for valid and test")
    parts = permutation_split(n, (n - 2 * held_out, held_out, held_out), split_seed)
    if is_streamed(rows):
        train, valid, test = (
            as_rows(Subset(rows.dataset, part.tolist()), name, pixel_divisor=pixel_divisor) for part in parts
        )
        kind = f"{type(rows.dataset).__name__} given to train_run, read as needed"
    else:
        train, valid, test = (rows[torch.from_numpy(part).to(rows.device)].contiguous() for part in parts)
        kind = f"{type(data).__name__} of shape {tuple(data.shape)} given to train_run"
    first = _first_example(data)
    binary = all(
        split.is_binary() if is_streamed(split) else bool(((split == 0) | (split == 1)).all())
        for split in (train, valid, test)
    )
    return Dataset(
        name=name,
        train=train,
        valid=valid,
        test=test,
        image_shape=image_features(first, pixel_divisor=pixel_divisor, name=f"`{name}`")[1],
        is_binary=binary,
        source=f"{kind} (split seed {split_seed})",
        pixel_divisor=(255.0 if pixel_divisor is None else float(pixel_divisor)) if _is_grey_levels(first) else None,
    )


def _first_example(data: object) -> torch.Tensor | np.ndarray:
    """The first example of ``data`` with its leading axis, (1, ...), as given (its dtype kept)."""
    if isinstance(data, torch.utils.data.DataLoader):
        data = data.dataset
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return data[:1]
    item = data[0]
    if isinstance(item, (tuple, list)):
        item = item[0]
    return item[None] if isinstance(item, torch.Tensor) else np.asarray(item)[None]


def _is_grey_levels(example: torch.Tensor | np.ndarray) -> bool:
    return example.dtype in (torch.uint8, np.uint8)
