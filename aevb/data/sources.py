"""Training data as the :class:`~aevb.training.Trainer` reads it: whatever the user holds, as rows.

:func:`as_rows` takes

- a tensor of any real, integer or boolean dtype, or a numpy array: converted once, in memory, to an
  (N, D) tensor of the model's dtype. uint8 values are grey levels k, read as k / ``pixel_divisor``
  (255 for user data, :data:`~aevb.data.USER_PIXEL_DIVISOR`, as for ``.npy`` files); images keep
  their layout through :func:`aevb.data.images.image_features` ((N, H, W), (N, C, H, W) or
  (N, H, W, C), flattened channels-first);
- a map-style :class:`torch.utils.data.Dataset` (items ``x`` or ``(x, y)``, the label unused), or a
  :class:`~torch.utils.data.DataLoader` over one: :class:`StreamedRows`, read minibatch by minibatch,
  so data larger than memory train with flat memory (e.g. :class:`NpyDataset` over a memory-mapped
  ``.npy`` file). The Trainer draws the order (seeded, the same on every process, continued by a
  resumed run), and each process reads only its own shard of every minibatch.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, Subset, default_collate
from torch.utils.data import Dataset as TorchDataset

from ..errors import AevbError
from .images import image_features

__all__ = ["NpyDataset", "StreamedRows", "as_rows", "features", "is_streamed"]

#: Rows read at once when a streamed split is scanned whole (its value range, its mean row).
SCAN_ROWS = 1024


def features(
    data: torch.Tensor | np.ndarray,
    setting: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    pixel_divisor: float | None = None,
) -> torch.Tensor:
    """``data`` (N, ...) as an (N, D) tensor of ``dtype`` on ``device``: uint8 grey levels k become
    k / ``pixel_divisor`` (default 255), images are flattened channels-first
    (:func:`aevb.data.images.image_features`), other numbers are converted unchanged. A one-line
    error naming ``setting`` for what cannot be rows of numbers."""
    if isinstance(data, np.ndarray) and data.dtype.kind not in "biuf":
        raise AevbError(f"`{setting}` must hold real numbers, got a numpy array of dtype {data.dtype}")
    if isinstance(data, torch.Tensor) and (data.is_complex() or not (data.is_floating_point() or _integral(data))):
        raise AevbError(f"`{setting}` must hold real numbers, got a tensor of dtype {data.dtype}")
    if isinstance(data, torch.Tensor) and data.requires_grad:
        data = data.detach()
    if data.ndim == 2 and data.dtype not in (np.uint8, torch.uint8):
        # Rows already: converted once, straight to the model's dtype (a float32 tensor is not copied).
        rows = torch.from_numpy(np.ascontiguousarray(data)) if isinstance(data, np.ndarray) else data
    else:
        rows = torch.from_numpy(image_features(data, pixel_divisor=pixel_divisor, name=f"`{setting}`")[0])
    return rows.to(device=device, dtype=dtype).contiguous()


def _integral(tensor: torch.Tensor) -> bool:
    return tensor.dtype == torch.bool or not (tensor.is_floating_point() or tensor.is_complex())


def is_streamed(data: object) -> bool:
    """Whether ``data`` is read minibatch by minibatch (:class:`StreamedRows`) rather than held."""
    return isinstance(data, StreamedRows)


class StreamedRows:
    """A map-style dataset read as rows, a few at a time, never whole.

    Args:
        dataset: ``len(dataset)`` items ``dataset[i]``, each an example ``x`` (any shape, any real
            dtype; uint8 read as grey levels) or a tuple ``(x, y)`` whose ``y`` is not used. A
            ``__getitems__(indices)`` method, where the dataset has one, reads a minibatch at once.
        setting: the argument's name, for errors.
        dtype: of the rows read.
        device: where the rows read are put.
        pixel_divisor: uint8 grey level k becomes k / pixel_divisor (default 255).
        collate (Callable | None): turns a list of items into a batch (default
            :func:`torch.utils.data.default_collate`).

    ``shape`` is (N, D), ``dtype`` and ``device`` those of the rows: what a training set's size,
    width and place are asked for. ``rows[a:b]`` and :meth:`read` give (M, D) tensors.
    """

    def __init__(
        self,
        dataset: TorchDataset,
        setting: str,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        pixel_divisor: float | None = None,
        collate=None,
    ):
        self.dataset, self.setting, self.dtype = dataset, setting, dtype
        self.device = torch.device("cpu" if device is None else device)
        self.pixel_divisor = pixel_divisor
        self.collate = default_collate if collate is None else collate
        self._scan: tuple[torch.Tensor, bool] | None = None  # (see _scanned)
        try:
            size = len(dataset)
        except TypeError:
            raise AevbError(f"`{setting}` must be a map-style dataset with a length (len() failed)") from None
        if size < 1:
            raise AevbError(f"`{setting}` is an empty dataset")
        first = self.read(torch.zeros(1, dtype=torch.long))
        self.shape = (size, first.shape[1])

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return self.shape[0]

    def _items(self, indices: list[int]):
        getitems = getattr(self.dataset, "__getitems__", None)
        try:
            items = getitems(indices) if getitems is not None else [self.dataset[i] for i in indices]
            # (a __getitems__ that reads a whole minibatch as one array needs no collation)
            batch = items if isinstance(items, (torch.Tensor, np.ndarray)) else self.collate(items)
        except (IndexError, KeyError, TypeError, ValueError, RuntimeError) as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise AevbError(f"`{self.setting}`: reading items {indices[0]}..{indices[-1]} failed: {first}") from None
        if isinstance(batch, (tuple, list)):  # (x, y) items: a VAE is trained on x alone
            if not batch:
                raise AevbError(f"`{self.setting}`: its items are empty tuples")
            batch = batch[0]
        if not isinstance(batch, (torch.Tensor, np.ndarray)):
            raise AevbError(
                f"`{self.setting}`: its items must be arrays or tensors (or (x, y) tuples of them), "
                f"got {type(batch).__name__}"
            )
        return batch

    def read(self, indices: torch.Tensor) -> torch.Tensor:
        """Rows ``indices`` (M,), in that order: an (M, D) tensor of ``dtype`` on ``device``."""
        rows = features(
            self._items(indices.tolist()),
            self.setting,
            dtype=self.dtype,
            device=self.device,
            pixel_divisor=self.pixel_divisor,
        )
        if rows.shape[0] != indices.shape[0]:
            raise AevbError(f"`{self.setting}`: {indices.shape[0]} items were asked for, {rows.shape[0]} rows came")
        if hasattr(self, "shape") and rows.shape[1] != self.shape[1]:
            raise AevbError(
                f"`{self.setting}`: item {indices[0].item()}.. has {rows.shape[1]} values, the first had {self.shape[1]}"
            )
        return rows

    def __getitem__(self, rows: slice) -> torch.Tensor:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("streamed rows are read by contiguous slices or read(indices)")
        start, stop, _ = rows.indices(self.shape[0])
        return self.read(torch.arange(start, max(start, stop)))

    def chunks(self, size: int = SCAN_ROWS):
        """The rows in order, ``size`` at a time."""
        for start in range(0, self.shape[0], size):
            yield self[start : start + size]

    def _scanned(self) -> tuple[torch.Tensor, bool]:
        """([min, max], whether every value is 0 or 1): one scan in chunks, kept, since loading,
        resolving and checking a run each ask (a cut or binarised view scans its own rows)."""
        if self._scan is None:
            low, high, binary = torch.tensor(float("inf")), torch.tensor(float("-inf")), True
            for chunk in self.chunks():
                low = torch.minimum(low, chunk.min().cpu().double())
                high = torch.maximum(high, chunk.max().cpu().double())
                binary = binary and bool(((chunk == 0) | (chunk == 1)).all())
            self._scan = (torch.stack([low, high]), binary)
        return self._scan

    def value_range(self) -> torch.Tensor:
        """[min, max] over every value (NaN where one is NaN): what a preflight checks of data it
        cannot hold."""
        return self._scanned()[0].clone()

    def mean_row(self) -> torch.Tensor:
        """(1, D): the mean example, in float64 over chunks, as ``dtype``."""
        total = torch.zeros(self.shape[1], dtype=torch.float64, device=self.device)
        for chunk in self.chunks():
            total += chunk.double().sum(0)
        return (total / self.shape[0]).to(self.dtype).unsqueeze(0)

    def is_binary(self) -> bool:
        """Whether every value is exactly 0 or 1."""
        return self._scanned()[1]

    def to(self, device: torch.device | str) -> "StreamedRows":
        """These rows, read onto ``device``."""
        moved = copy.copy(self)
        moved.device = torch.device(device)
        return moved

    def first(self, count: int) -> "StreamedRows":
        """The first ``count`` rows (a training set cut to a limit), still streamed."""
        cut = copy.copy(self)
        cut.dataset, cut.shape, cut._scan = Subset(self.dataset, range(count)), (count, self.shape[1]), None
        return cut

    def binarized(self, seed: int) -> "StreamedRows":
        """These rows as fixed Bernoulli draws: each read of rows a..b draws from a generator seeded
        with (``seed``, a), so the same slices give the same binary rows every time."""
        return _Binarized(self, seed)

    def __repr__(self) -> str:
        return f"StreamedRows({type(self.dataset).__name__}, N={self.shape[0]}, D={self.shape[1]})"


class _Binarized(StreamedRows):
    def __init__(self, rows: StreamedRows, seed: int):  # (no scan: the rows are checked already)
        self.__dict__.update(rows.__dict__)
        self.seed, self._scan = seed, None

    def __getitem__(self, rows: slice) -> torch.Tensor:
        probabilities = super().__getitem__(rows)
        start = rows.indices(self.shape[0])[0]
        generator = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + start)
        return torch.bernoulli(probabilities.cpu(), generator=generator).to(probabilities.device)


def as_rows(
    data: object,
    setting: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    pixel_divisor: float | None = None,
) -> torch.Tensor | StreamedRows:
    """``data`` as the trainer reads it: a tensor or numpy array becomes an (N, D) tensor of ``dtype``
    on ``device`` (:func:`features`; a tensor's own device when ``device`` is None); a map-style
    Dataset, or a DataLoader's (with its collate function), becomes :class:`StreamedRows`. Anything
    else, and an iterable-style dataset (it cannot be read in the Trainer's seeded order), is a
    one-line error naming ``setting``."""
    if isinstance(data, StreamedRows):
        return data
    if isinstance(data, DataLoader):
        collate = data.collate_fn if data.batch_size is not None else None  # (batch_size None: no collation)
        return _streamed(data.dataset, setting, dtype, device, pixel_divisor, collate)
    if isinstance(data, (torch.Tensor, np.ndarray)):
        if device is None and isinstance(data, torch.Tensor):
            device = data.device
        return features(data, setting, dtype=dtype, device=device, pixel_divisor=pixel_divisor)
    # (a dataset of another library — Hugging Face's, say — is read through len() and [i] alike; a
    # list is not taken for one: torch.tensor(the list) says what it means)
    sequence = (
        hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, (list, tuple, str, dict))
    )
    if isinstance(data, (TorchDataset, IterableDataset)) or sequence:
        return _streamed(data, setting, dtype, device, pixel_divisor, None)
    raise AevbError(
        f"`{setting}` must be a tensor, a numpy array, a map-style torch Dataset or a DataLoader, "
        f"got {type(data).__name__}"
    )


def _streamed(dataset, setting, dtype, device, pixel_divisor, collate) -> StreamedRows:
    if isinstance(dataset, IterableDataset):
        raise AevbError(
            f"`{setting}` is an iterable-style dataset: training reads rows in its own seeded order, "
            "so it needs a map-style dataset (len() and dataset[i])"
        )
    return StreamedRows(dataset, setting, dtype=dtype, device=device, pixel_divisor=pixel_divisor, collate=collate)


class NpyDataset(TorchDataset):
    """The rows of a ``.npy`` file, memory-mapped: a dataset larger than memory, read as needed.

    ``NpyDataset(path)[i]`` is row i as a numpy array (of the file's dtype; uint8 grey levels are
    scaled where the rows are read); ``__getitems__`` reads a minibatch in one indexing.
    ``rows`` (optional, an index array) restricts it to those rows, in that order: a split.
    """

    def __init__(self, path: str | os.PathLike, rows: np.ndarray | None = None):
        self.path = Path(path)
        try:
            self.array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise AevbError(f"{self.path}: cannot be memory-mapped as a .npy array: {error}") from None
        if self.array.ndim < 2 or self.array.shape[0] < 1:
            raise AevbError(f"{self.path}: needs one example per row, shape (N, ...), got {self.array.shape}")
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return self.array.shape[0] if self.rows is None else self.rows.shape[0]

    def _index(self, indices) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        return indices if self.rows is None else self.rows[indices]

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(self.array[self._index([index])[0]])

    def __getitems__(self, indices: list[int]) -> np.ndarray:
        return np.asarray(self.array[self._index(indices)])
