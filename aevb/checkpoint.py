"""Saving and loading models: safetensors for the weights, JSON for the configuration.

Never pickle: a model file is ``model.safetensors`` (tensors only, no code) beside
``model.json`` (the :class:`~aevb.models.vae.ModelConfig` and a format version;
:mod:`aevb.models.files`). Files are written to a temporary name and renamed into place, so a
crash leaves the old file or the new one, never half (:mod:`aevb.files`, whose primitives the
run modules import from here too).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import AevbError
from .files import (
    apply_umask,
    atomic_write_bytes,
    atomic_write_json,
    check_format_version,
    current_umask,
    named_os_error,
    open_no_follow,
    parse_json,
    read_json,
    read_text_file,
    refuse_link,
    strict_json,
)
from .models.build import build_model
from .models.files import (
    CONFIG_FILE,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    load_weights,
    model_config_of,
    read_model_files,
    save_model,
)
from .models.vae import VAE

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "apply_umask",
    "atomic_write_bytes",
    "atomic_write_json",
    "check_format_version",
    "current_umask",
    "load_model",
    "load_weights",
    "model_with_weights",
    "named_os_error",
    "open_no_follow",
    "parse_json",
    "read_json",
    "read_text_file",
    "refuse_link",
    "save_model",
    "strict_json",
]


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> VAE:
    """Rebuild a :class:`VAE` (or the full-VB model) from ``model.json`` and load ``model.safetensors``."""
    directory = Path(directory)
    meta, tensors = read_model_files(directory)
    model = model_with_weights(meta, directory / CONFIG_FILE, tensors, directory / WEIGHTS_FILE)
    return model.to(device).eval()


def model_with_weights(meta: dict, where: str | os.PathLike, tensors: dict[str, torch.Tensor], source) -> VAE:
    """The model that ``meta["model"]`` (a configuration read from ``where``) describes, holding
    ``tensors`` (read from ``source``): one-line errors for a bad configuration, weights that do
    not fit it, and NaN or infinite weights."""
    config = model_config_of(meta, where)
    try:
        model = build_model(config)
    except (TypeError, ValueError, OverflowError, RuntimeError) as error:
        raise AevbError(f"{where}: bad model configuration ({error})") from None
    load_weights(model, tensors, source, where)
    return model
