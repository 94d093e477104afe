"""PLACEHOLDER (lead's branch): replaced by the images helper's module at merge."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import AevbError

USER_PIXEL_DIVISOR = 255.0
CHANNEL_COUNTS = (1, 3, 4)


def image_features(data, *, setting: str = "data", pixel_divisor: float | None = None):
    """(N, D) float32 rows and the image shape of (N, D), (N, H, W), (N, C, H, W) or (N, H, W, C)."""
    tensor = torch.as_tensor(data) if isinstance(data, np.ndarray) else data
    if tensor.ndim < 2:
        raise AevbError(f"`{setting}` must hold one example per row, shape (N, D), got {tuple(tensor.shape)}")
    if tensor.dtype == torch.uint8:
        tensor = tensor.float() / (USER_PIXEL_DIVISOR if pixel_divisor is None else pixel_divisor)
    elif not tensor.is_floating_point():
        tensor = tensor.float()
    shape = tuple(tensor.shape[1:])
    if tensor.ndim == 4 and shape[-1] in CHANNEL_COUNTS and shape[0] not in CHANNEL_COUNTS:
        tensor = tensor.permute(0, 3, 1, 2)
        shape = tuple(tensor.shape[1:])
    elif tensor.ndim > 4:
        raise AevbError(f"`{setting}` has shape {tuple(tensor.shape)}")
    return tensor.reshape(tensor.shape[0], -1), (shape if tensor.ndim > 2 else None)
