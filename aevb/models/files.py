"""A model's files: ``model.safetensors`` (tensors only, no code) beside ``model.json`` (the
:class:`~aevb.models.config.ModelConfig` and a format version). Never pickle.

A run directory holds them as its final model; a directory written by ``save_pretrained`` holds
them too, with a model card and, in ``model.json``, what the run that trained the model recorded
(``run``: its data and training settings, bounds, command), so that a saved model can be
evaluated like the run and its card written again.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..errors import AevbError
from ..files import atomic_write_bytes, atomic_write_json, check_format_version, read_json
from .buildable import check_buildable
from .config import ModelConfig

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"

#: The key of ``model.json`` under which a saved model keeps what its run recorded.
RUN_RECORD_KEY = "run"


def save_model(model: torch.nn.Module, directory: str | os.PathLike, run_record: dict | None = None) -> None:
    """Write ``model.safetensors`` and ``model.json`` into ``directory``; ``run_record`` (what the
    run that trained the model recorded, plain JSON) is kept in model.json where given."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    # One metadata entry only: safetensors writes the metadata map in hash order, so two entries
    # would make the bytes of the same weights differ between processes (same seed, other file).
    # Written through atomic_write_bytes (a unique temporary file, fsync, rename), like the JSON.
    atomic_write_bytes(directory / WEIGHTS_FILE, save(tensors, metadata={"aevb_format_version": str(FORMAT_VERSION)}))
    meta = {"format_version": FORMAT_VERSION, "model": model.config.to_dict()}
    if run_record is not None:
        meta[RUN_RECORD_KEY] = run_record
    atomic_write_json(directory / CONFIG_FILE, meta)


def read_model_files(directory: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """``model.json`` (checked for its format version) and the tensors of ``model.safetensors``
    in ``directory``, with one-line errors for a missing or unreadable file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AevbError(f"{directory} is not a directory")
    meta = read_json(directory / CONFIG_FILE)
    check_format_version(meta, FORMAT_VERSION, directory / CONFIG_FILE)
    weights = directory / WEIGHTS_FILE
    try:
        tensors = load_file(str(weights))
    except FileNotFoundError:
        raise AevbError(f"{weights} not found") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise AevbError(f"{weights} is not a readable safetensors file ({error})") from None
    return meta, tensors


def model_config_of(meta: dict, where: str | os.PathLike) -> ModelConfig:
    """The configuration ``meta["model"]`` (read from ``where``) holds, checked as buildable: a
    one-line error naming ``where`` for a missing or bad one."""
    if not isinstance(meta.get("model"), dict):
        raise AevbError(f"{where} has no model configuration")
    try:
        config = ModelConfig.from_dict(meta["model"], f"{where}: model")
        check_buildable(config, f"{where}: model")  # as VAE.__init__ does, but naming the file
    except (TypeError, ValueError, OverflowError, RuntimeError) as error:
        raise AevbError(f"{where}: bad model configuration ({error})") from None
    return config


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source, where) -> None:
    """Load ``tensors`` (read from ``source``) into ``model`` (described by ``where``), with
    one-line errors for names or shapes that do not fit, a dtype the model does not store (torch
    would cast it silently), and NaN or infinite weights."""
    expected = model.state_dict()
    for name, tensor in tensors.items():
        if name in expected and tensor.dtype != expected[name].dtype:
            raise AevbError(
                f"{source} stores {name} as {str(tensor.dtype).removeprefix('torch.')}, but the model "
                f"stores {str(expected[name].dtype).removeprefix('torch.')}"
            )
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        raise AevbError(f"{source} does not match {where}: {str(error).strip().splitlines()[0]}") from None
    # A model with NaN or infinite weights answers every question with NaN: refuse it here, once.
    broken = [
        name for name, tensor in tensors.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    if broken:
        raise AevbError(
            f"{source} holds NaN or infinite weights ({', '.join(broken[:3])}"
            f"{', ...' if len(broken) > 3 else ''}); the model is unusable"
        )
