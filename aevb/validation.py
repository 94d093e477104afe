"""Checks of the arguments that the library's public functions take.

A bad count or a data array of the wrong width raises :class:`AevbError` with one line that names
the setting, before any work: the same promise the CLI makes, kept for callers of the Python API.
"""

from __future__ import annotations

import math
import numbers

import torch

from .data.sources import StreamedRows
from .errors import AevbError


def require_count(value: object, setting: str, minimum: int = 1) -> int:
    """``value`` as an int when it is a whole number ≥ ``minimum`` (an int or a whole float such
    as 1e4), else a one-line error naming ``setting``."""
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not whole and isinstance(value, float) and value.is_integer():
        whole, value = True, int(value)
    if not whole or value < minimum:
        raise AevbError(f"`{setting}` must be a whole number ≥ {minimum}, got {value!r}")
    return int(value)


def require_rows(data: object, model: object, setting: str = "data") -> None:
    """A one-line error unless ``data`` is a non-empty (N, D) tensor (or rows streamed from a dataset,
    :class:`aevb.data.sources.StreamedRows`) whose D is the model's ``input_width`` (where the model
    has one)."""
    if not isinstance(data, (torch.Tensor, StreamedRows)):
        raise AevbError(f"`{setting}` must be a torch.Tensor of shape (N, D), got {type(data).__name__}")
    if data.ndim != 2 or data.shape[0] < 1:
        raise AevbError(f"`{setting}` must be a non-empty (N, D) tensor, got shape {tuple(data.shape)}")
    width = getattr(model, "input_width", None)  # a module of the user's own may not say
    if width is not None and data.shape[1] != width:
        raise AevbError(f"`{setting}` has {data.shape[1]} columns, but the model takes rows of {width}")


def require_trainable_values(
    data: torch.Tensor | StreamedRows, setting: str, likelihood: str | None, binarize: str
) -> None:
    """A one-line error, naming ``setting``, unless every value of ``data`` is finite, and in
    [0, 1] where a Bernoulli decoder (``likelihood``) or dynamic binarisation (``binarize``) reads
    them as probabilities. Streamed rows are scanned in chunks for their range."""
    if isinstance(data, StreamedRows):
        data = data.value_range()
    if not data.numel():
        return
    low, high = data.min().item(), data.max().item()  # NaN propagates through both
    if not (math.isfinite(low) and math.isfinite(high)):
        raise AevbError(f"{setting} holds NaN or infinite values")
    if (likelihood == "bernoulli" or binarize == "dynamic") and (low < 0 or high > 1):
        why = "a Bernoulli decoder" if likelihood == "bernoulli" else "dynamic binarization"
        raise AevbError(
            f"{setting} values lie in [{low:g}, {high:g}], but {why} needs values in [0, 1]; "
            "rescale the data or use `likelihood` gaussian"
        )
