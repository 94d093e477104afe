"""User data as NumPy files (``--dataset path.npy`` or ``.npz``): read without running pickled code,
and checked to be a finite (N, D), (N, H, W), (N, C, H, W) or (N, H, W, C) array (plus integer
labels) before any use."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import AevbError
from .formats import _one_line
from .images import check_feature_array


def check_features(array: object, path: str | os.PathLike, what: str) -> np.ndarray:
    """Validate a user data array (:func:`aevb.data.images.check_feature_array`: numeric, 2 to 4
    dimensions, finite), errors naming ``path`` and ``what``. Returns the array unchanged."""
    return check_feature_array(array, f"{path}: {what}")


def check_labels(array: object, path: str | os.PathLike, what: str, n: int) -> np.ndarray:
    """Validate a label array: integer ``(n,)``. Returns it as int64."""
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iu":
        kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise AevbError(f"{path}: {what} has type {kind}, expected integers")
    if array.shape != (n,):
        raise AevbError(f"{path}: {what} has shape {array.shape}, expected ({n},)")
    if array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
        raise AevbError(f"{path}: {what} has values too large for int64")
    return array.astype(np.int64)


def _np_load(path: Path):
    if not path.is_file():
        raise AevbError(f"{path}: not a file")
    # np.load treats any file without a NumPy or zip header as a pickle; say what it really is.
    with open(path, "rb") as stream:
        header = stream.read(6)
    if not (header.startswith(b"\x93NUMPY") or header.startswith(b"PK\x03\x04")):
        raise AevbError(f"{path}: not a NumPy .npy/.npz file (no NumPy or zip header)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise AevbError(
                f"{path}: holds pickled Python objects (e.g. an object array), which are not "
                "loaded for safety; save a numeric array"
            ) from None
        raise AevbError(f"{path}: cannot read numpy file ({_one_line(exc)})") from None
    except Exception as exc:  # np.load raises OSError, EOFError, BadZipFile, UnicodeError, ...
        raise AevbError(f"{path}: cannot read numpy file ({_one_line(exc)})") from None


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """Read a user ``.npy`` file: a numeric finite array ``(N, D)``, ``(N, H, W)``, ``(N, C, H, W)``
    or ``(N, H, W, C)``."""
    path = Path(path)
    array = _np_load(path)
    if not isinstance(array, np.ndarray):
        array.close()
        raise AevbError(f"{path}: is an .npz archive, not a single .npy array; rename it to .npz")
    return check_features(array, path, "the array")


NPZ_KEYS = ("train", "valid", "test", "train_labels", "valid_labels", "test_labels")


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a user ``.npz`` archive into a dict with a subset of :data:`NPZ_KEYS`.

    ``train`` is required; ``valid``/``test`` are optional data arrays (validated as in
    :func:`check_features`); ``<split>_labels`` are optional integer arrays ``(N_split,)`` and
    only allowed alongside their split. Unknown keys are an error (likely a typo).
    """
    path = Path(path)
    archive = _np_load(path)
    if isinstance(archive, np.ndarray):
        raise AevbError(f"{path}: is a single .npy array, not an .npz archive; rename it to .npy")
    with archive:
        keys = list(archive.files)
        unknown = sorted(set(keys) - set(NPZ_KEYS))
        if unknown:
            raise AevbError(f"{path}: unexpected key(s) {', '.join(unknown)}; allowed: {', '.join(NPZ_KEYS)}")
        if "train" not in keys:
            raise AevbError(f"{path}: no 'train' array (keys: {', '.join(keys) or 'none'})")
        out: dict[str, np.ndarray] = {}
        for key in keys:
            try:
                out[key] = archive[key]
            except ValueError as exc:
                if "pickle" in str(exc):
                    raise AevbError(
                        f"{path}: array '{key}' holds pickled Python objects, which are not loaded"
                    ) from None
                raise AevbError(f"{path}: cannot read array '{key}' ({_one_line(exc)})") from None
            except Exception as exc:  # corrupt member: BadZipFile, zlib.error, EOFError, ...
                raise AevbError(f"{path}: cannot read array '{key}' ({_one_line(exc)})") from None
    for split in ("train", "valid", "test"):
        if split in out:
            check_features(out[split], path, f"array '{split}'")
        key = f"{split}_labels"
        if key in out:
            if split not in out:
                raise AevbError(f"{path}: '{key}' given without '{split}'")
            out[key] = check_labels(out[key], path, f"array '{key}'", out[split].shape[0])
    shapes = {out[s].shape[1:] for s in ("train", "valid", "test") if s in out}
    if len(shapes) > 1:
        raise AevbError(
            f"{path}: splits disagree in per-example shape: "
            + ", ".join(f"{s} {out[s].shape}" for s in ("train", "valid", "test") if s in out)
        )
    return out
