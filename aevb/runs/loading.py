"""Reading a run's model: the final one, the latest checkpoint's or the best by validation bound,
of a run directory or of a saved model's directory (``model.save_pretrained``); what
``aevb.load``, evaluate, sample and export read."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..checkpoint import load_model, model_with_weights
from ..errors import AevbError
from ..models.vae import VAE
from ..training.checkpoints import has_checkpoint, load_checkpoint
from .best import load_best_model
from .layout import CONFIG_FILE, read_run_config
from .saved_model import is_saved_model, load_saved_model, run_record
from .spec import resolve_device

#: Which model of a run to read: the final one (model.safetensors), the latest checkpoint's (a
#: run still training, or stopped), or the best by validation bound (:mod:`aevb.runs.best`).
MODEL_CHOICES = ("final", "latest", "best")


def model_choice(checkpoint: bool | str = False, best: bool = False) -> str:
    """One of :data:`MODEL_CHOICES` from ``checkpoint`` (False: final, True: latest, or a choice by
    name) and ``best`` (the same as ``checkpoint="best"``); a one-line error for anything else."""
    choice = (
        {False: "final", True: "latest"}.get(checkpoint, checkpoint) if isinstance(checkpoint, bool) else checkpoint
    )
    if choice not in MODEL_CHOICES:
        raise AevbError(f"`checkpoint` must be one of {', '.join(MODEL_CHOICES)} (or true, false), got {checkpoint!r}")
    if best and choice not in ("final", "best"):
        raise AevbError(f"`best` asks for the best model and `checkpoint` for the {choice} one: ask for one")
    return "best" if best else choice


def load_run(
    run_dir: str | os.PathLike, device: str = "auto", checkpoint: bool | str = False, *, best: bool = False
) -> tuple[VAE, dict]:
    """The trained model of a run and its configuration.

    ``checkpoint``: which model (:data:`MODEL_CHOICES`): "final" (or False, the default), the
    model the run ended with; "latest" (or True), its latest checkpoint's, for a run that is still
    training or was stopped (the configuration then gains ``checkpoint``, with the ``samples``
    and ``steps`` it was taken at; reading a checkpoint never disturbs the training that writes
    them: they are written whole and renamed into place); "best" (or ``best=True``), the model at
    the evaluation point with the highest validation bound, kept as the run goes (the
    configuration then gains ``best``: ``samples``, ``steps``, ``valid_bound``).

    ``run_dir`` may also be a saved model's directory (``model.save_pretrained``, ``aevb export
    --format hub``; :mod:`aevb.runs.saved_model`): its configuration holds what its run recorded.
    """
    choice = model_choice(checkpoint, best)
    run_dir = Path(run_dir)
    if is_saved_model(run_dir):
        return load_saved_model(run_dir, resolve_device(device), checkpoint=choice != "final")
    config = read_run_config(run_dir)
    if choice == "latest":
        return _load_checkpoint_model(run_dir, config, resolve_device(device))
    if choice == "best":
        return load_best_model(run_dir, config, resolve_device(device))
    if not (run_dir / "model.safetensors").exists():
        if has_checkpoint(run_dir):
            raise AevbError(
                f"{run_dir} holds no final model yet (the run has not finished); `checkpoint` "
                "takes the model of its latest checkpoint"
            )
        raise AevbError(f"{run_dir} holds no trained model (model.safetensors); did the run finish?")
    return load_model(run_dir, resolve_device(device)), config


def _load_checkpoint_model(run_dir: Path, config: dict, device: torch.device) -> tuple[VAE, dict]:
    if not has_checkpoint(run_dir):
        raise AevbError(f"{run_dir} has no checkpoint")
    state = load_checkpoint(run_dir)
    model = model_with_weights(config, run_dir / CONFIG_FILE, state.model, f"the checkpoint in {run_dir}")
    return model.to(device).eval(), {**config, "checkpoint": {"samples": state.samples, "steps": state.steps}}


def load(
    run_dir: str | os.PathLike, device: str = "auto", checkpoint: bool | str = False, *, best: bool = False
) -> VAE:
    """The trained model of a run, ready to use: in evaluation mode, on ``device`` (CUDA when
    available under "auto"): ``model.sample(n)``, ``model.reconstruct(x)``, ``model.encode(x)``,
    ``model.decode(z)``; its bound by :func:`aevb.evaluate_bound`. ``checkpoint``: which model, as
    for :func:`load_run`: "final" (the default), "latest" (True: the latest checkpoint's, a run
    still training or stopped) or "best" (by validation bound; ``best=True`` says the same).
    ``run_dir`` may also be a saved model's directory (``model.save_pretrained``). The model keeps
    its run's record (``model.run_record``), so that ``model.save_pretrained(directory)`` writes
    the run's model card."""
    model, config = load_run(run_dir, device, checkpoint, best=best)
    if "saved_model" not in config:  # (a saved model's record came with it)
        model.run_record = run_record(run_dir, config)
    return model.eval()
