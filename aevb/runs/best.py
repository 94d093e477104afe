"""The best model of a run by validation bound, kept in the run directory as a model of its own::

    best/model.safetensors, best/model.json    the weights at the evaluation point with the highest
                                               validation bound so far (as the final model's files)
    best/best.json                             where it was taken: samples, steps, validation bound

Written by rank 0 at each evaluation point that raises the validation bound, each file replaced
atomically, before that point's checkpoint: a run killed between the two measures the point again
on resume and writes it again. A run without a validation split keeps none."""

from __future__ import annotations

import os
from pathlib import Path

from ..checkpoint import atomic_write_json, load_model, read_json, save_model
from ..errors import AevbError
from ..models.vae import VAE
from ..training import TrainingState
from .layout import BEST_DIRECTORY

BEST_FILE = "best.json"


def is_new_best(state: TrainingState) -> bool:
    """Whether ``state`` (handed to a checkpoint) is at the evaluation point that set the best
    validation bound: the model's weights are then the best model's."""
    return (
        state.best_samples is not None
        and state.samples == state.best_samples
        and bool(state.history)
        and state.history[-1].samples == state.samples
    )


def save_best_model(run_dir: str | os.PathLike, model: VAE, state: TrainingState) -> None:
    """Write ``model`` (at the evaluation point of ``state``) as the run's best model."""
    directory = Path(run_dir) / BEST_DIRECTORY
    save_model(model, directory)
    atomic_write_json(
        directory / BEST_FILE,
        {"samples": state.samples, "steps": state.steps, "valid_bound": state.best_valid_bound},
    )


def load_best_model(run_dir: Path, config: dict, device) -> tuple[VAE, dict]:
    """The run's best model by validation bound, and its configuration with ``best`` (the
    ``samples``, ``steps`` and ``valid_bound`` where it was taken); a one-line error naming why
    there is none."""
    directory = run_dir / BEST_DIRECTORY
    if not (directory / BEST_FILE).is_file():
        data = config.get("data") if isinstance(config.get("data"), dict) else {}
        if data.get("valid_size") == 0:
            why = "it trained without a validation split to choose one by (e.g. `merge_valid`)"
        else:
            why = "it has not reached an evaluation point with a validation bound yet, or an older aevb trained it"
        raise AevbError(f"{run_dir} keeps no best model: {why}; load its final model or `checkpoint` instead")
    where = read_json(directory / BEST_FILE)
    model = load_model(directory, device)
    taken = {key: where.get(key) for key in ("samples", "steps", "valid_bound")}
    return model, {**config, "best": taken}
