"""The shape of an image datapoint, as a :class:`~aevb.data.Dataset` and a
:class:`~aevb.models.config.ModelConfig` record it: ``(H, W)`` for grey images (what every run of
an aevb before colour stored, so those runs load unchanged) and ``(C, H, W)`` for C = 3 (RGB) or
4 (RGBA) channels. A datapoint's D = C·H·W values are the image flattened channels first
(torch's layout: all of channel 0 row by row, then channel 1, ...).

A module of its own, importing neither torch nor numpy, so that the data, the models and the
command line can all name the rule without importing each other.
"""

from __future__ import annotations

import math

from .errors import AevbError

__all__ = ["COLOUR_CHANNELS", "image_channels", "image_size", "normalize_image_shape"]

#: Channel counts of colour images: RGB and RGBA. A single channel is grey, recorded as (H, W).
COLOUR_CHANNELS = (3, 4)


def normalize_image_shape(shape: object, data_dim: int, setting: str = "image_shape") -> tuple[int, ...] | None:
    """``shape`` as the canonical tuple: ``(H, W)`` for grey (also when given as ``(1, H, W)``),
    ``(C, H, W)`` for C in :data:`COLOUR_CHANNELS`; None stays None.

    Raises:
        AevbError: one line naming ``setting`` when the shape is not 2 or 3 positive integers, has
            a channel count other than 1, 3 or 4, or does not hold ``data_dim`` values.
    """
    if shape is None:
        return None
    try:
        values = tuple(int(side) for side in shape)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise AevbError(f"`{setting}` must be (height, width) or (channels, height, width), got {shape!r}") from None
    if len(values) not in (2, 3) or min(values) < 1:
        raise AevbError(f"`{setting}` must be (height, width) or (channels, height, width), got {values}")
    if len(values) == 3 and values[0] == 1:
        values = values[1:]
    if len(values) == 3 and values[0] not in COLOUR_CHANNELS:
        raise AevbError(f"`{setting}` {values} has {values[0]} channels; images have 1 (grey), 3 (RGB) or 4 (RGBA)")
    if math.prod(values) != int(data_dim):
        sides = "×".join(map(str, values))
        raise AevbError(f"`{setting}` {sides} has {math.prod(values)} values but `data_dim` is {data_dim}")
    return values


def image_channels(shape: tuple[int, ...]) -> int:
    """C, the channels of an image shape: 1 for ``(H, W)``, else the first entry of ``(C, H, W)``."""
    return 1 if len(shape) == 2 else int(shape[0])


def image_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """(H, W), an image shape's height and width in pixels."""
    return int(shape[-2]), int(shape[-1])
