"""Images and other arrays as datapoints: :func:`image_features` turns an array of any numeric dtype
and any of the usual image layouts into the float32 ``(N, D)`` rows that aevb trains on, and
says the image shape it found (:mod:`aevb.image_shape`)."""

from __future__ import annotations

import math

import numpy as np

from ..errors import AevbError
from ..image_shape import COLOUR_CHANNELS, normalize_image_shape

__all__ = ["USER_PIXEL_DIVISOR", "check_feature_array", "check_pixel_divisor", "image_features"]

# Grey levels k in 0..255 of the user's data become k / USER_PIXEL_DIVISOR (the IWAE protocol's
# scaling; the paper's own data divide by 256, aevb.data.datasets.PAPER_PIXEL_DIVISOR).
USER_PIXEL_DIVISOR = 255.0

_CHANNEL_COUNTS = (1, *COLOUR_CHANNELS)


def check_pixel_divisor(pixel_divisor: float | None) -> None:
    """A one-line error naming ``pixel_divisor`` unless it is None or a finite number ≥ 255 (below
    255 the grey level 255 would leave [0, 1])."""
    if pixel_divisor is not None and not (math.isfinite(pixel_divisor) and pixel_divisor >= 255):
        raise AevbError(f"`pixel_divisor` must be at least 255 (grey levels 0..255 into [0, 1]), got {pixel_divisor}")


def check_feature_array(array: object, name: str) -> np.ndarray:
    """``array`` (a numpy array or a torch tensor) as a numpy array, after checking that it is
    numeric (bool, integer or real), of 2 to 4 dimensions with every size ≥ 1, and finite (also in
    float32). ``name`` starts each one-line error (e.g. ``"data.npy: the array"``)."""
    if type(array).__module__.startswith("torch"):  # a tensor, without importing torch here
        array = _tensor_to_numpy(array, name)
    if not isinstance(array, np.ndarray):
        raise AevbError(f"{name} is a {type(array).__name__}, not a numpy array or torch tensor")
    if array.dtype.kind not in "biuf":
        raise AevbError(f"{name} has non-numeric dtype {array.dtype}")
    if array.ndim not in (2, 3, 4):
        raise AevbError(f"{name} has shape {array.shape}, expected (N, D), (N, H, W), (N, C, H, W) or (N, H, W, C)")
    if array.size == 0:
        raise AevbError(f"{name} is empty (shape {array.shape})")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise AevbError(f"{name} contains NaN or infinite values")
        if array.dtype.itemsize > 4 and np.abs(array).max() > np.finfo(np.float32).max:
            raise AevbError(f"{name} has values too large for float32")
    return array


def _tensor_to_numpy(tensor, name: str) -> np.ndarray:
    if tensor.is_complex():
        raise AevbError(f"{name} has non-numeric dtype {tensor.dtype} (complex)")
    tensor = tensor.detach().cpu()
    if tensor.dtype.is_floating_point and tensor.element_size() < 4:  # bfloat16 has no numpy dtype
        tensor = tensor.float()
    return tensor.numpy()


def _channels_first(shape: tuple[int, ...], channels_last: bool | None, name: str) -> bool:
    """Whether an ``(N, A, B, C)`` array holds channels first (A) rather than last (C)."""
    if channels_last is not None:
        channels = shape[3] if channels_last else shape[1]
        if channels not in _CHANNEL_COUNTS:
            where = "last" if channels_last else "first"
            raise AevbError(f"{name} has shape {shape}: {channels} channels {where}; images have 1, 3 or 4 channels")
        return not channels_last
    first, last = shape[1] in _CHANNEL_COUNTS, shape[3] in _CHANNEL_COUNTS
    if first and last:
        raise AevbError(
            f"{name} has shape {shape}, which could hold channels first (N, C, H, W) or last (N, H, W, C); "
            "pass `channels_last` True or False"
        )
    if not (first or last):
        raise AevbError(
            f"{name} has shape {shape}: neither {shape[1]} nor {shape[3]} is a channel count (1, 3 or 4); "
            "expected (N, C, H, W) or (N, H, W, C)"
        )
    return first


def image_features(
    array: object,
    *,
    pixel_divisor: float | None = None,
    channels_last: bool | None = None,
    name: str = "the data",
) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """An array of datapoints as float32 rows, with the image shape it holds.

    Args:
        array: a numpy array or torch tensor of bool, integer or real values, ``(N, D)`` (no image
            shape), ``(N, H, W)`` (grey), ``(N, C, H, W)`` or ``(N, H, W, C)`` with C = 1, 3 or 4.
        pixel_divisor: uint8 values k become k / pixel_divisor (default :data:`USER_PIXEL_DIVISOR`,
            255); every other dtype is converted to float32 unchanged (its range is the decoder's
            concern, checked where the model is known).
        channels_last: whether a 4-D array is (N, H, W, C); None: decided from the shape, a one-line
            error when both readings are possible (e.g. (N, 3, 8, 3)).
        name: how errors name the array (e.g. ``"data.npy: the array"``).

    Returns:
        ``(rows, image_shape)``: rows float32 C-contiguous ``(N, D)``, D = C·H·W, each image
        flattened channels first; image_shape ``(H, W)`` for grey, ``(C, H, W)`` for colour, None
        for ``(N, D)`` input (:mod:`aevb.image_shape`).

    Raises:
        AevbError: one line naming ``name`` for a non-numeric, empty or non-finite array, a shape
            that is none of the above, or a bad ``pixel_divisor``.
    """
    check_pixel_divisor(pixel_divisor)
    array = check_feature_array(array, name)
    if array.ndim == 4:
        if not _channels_first(array.shape, channels_last, name):
            array = array.transpose(0, 3, 1, 2)
        image_shape = normalize_image_shape(array.shape[1:], math.prod(array.shape[1:]), "image_shape")
    elif array.ndim == 3:
        image_shape = (int(array.shape[1]), int(array.shape[2]))
    else:
        image_shape = None
    rows = array.reshape(array.shape[0], -1)
    if rows.dtype == np.uint8:
        scaled = rows.astype(np.float32)  # a new contiguous array, divided in place
        scaled /= np.float32(USER_PIXEL_DIVISOR if pixel_divisor is None else pixel_divisor)
        return scaled, image_shape
    return np.ascontiguousarray(rows, dtype=np.float32), image_shape
