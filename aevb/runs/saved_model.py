"""A saved model's directory (``model.save_pretrained``, ``aevb export RUN --format hub``) read
wherever a run is read, and the record of its run that such a directory keeps.

A saved model holds aevb's model files and, when it was saved from a run, the run's record
(:mod:`aevb.models.card`): its data and training settings, bounds and command. That record is
what makes it evaluable like the run (its data set is loaded again from the recorded settings)
and what its model card is written from.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import AevbError
from ..files import read_json
from ..models.files import CONFIG_FILE as MODEL_CONFIG_FILE
from ..models.files import RUN_RECORD_KEY
from ..models.pretrained import is_saved_model
from ..models.vae import VAE
from .evaluations import latest_log_likelihood
from .layout import SUMMARY_FILE

__all__ = ["is_saved_model", "load_saved_model", "run_record", "saved_model_as_run"]

#: What of a run's summary.json a saved model keeps (the card's training and results).
SUMMARY_KEYS = ("samples", "epochs", "train_bound", "valid_bound", "test_bound", "step_size", "training_seconds")

#: What of a run's config.json a saved model keeps: enough to load its data again and evaluate it
#: as the run would be evaluated, and to say how it was made.
CONFIG_KEYS = ("data", "training", "algorithm", "command", "created", "aevb_version")


def run_record(run_dir: str | os.PathLike, config: dict) -> dict:
    """What a run recorded about the model it trained, as plain JSON (the card's facts, kept in a
    saved model's model.json): ``config`` (the run's config.json; with ``checkpoint`` for the
    model of a checkpoint) in part, its summary's numbers, and the newest test log p(x) kept by
    ``aevb evaluate --nll``. A run that has not finished has no summary: none is recorded."""
    run_dir = Path(run_dir)
    record = {key: config[key] for key in CONFIG_KEYS if key in config}
    if "checkpoint" in config:
        record["checkpoint"] = config["checkpoint"]
        return record
    try:
        summary = read_json(run_dir / SUMMARY_FILE)
    except AevbError:
        summary = {}
    record["summary"] = {key: summary[key] for key in SUMMARY_KEYS if key in summary}
    log_likelihood = latest_log_likelihood(run_dir)
    if log_likelihood is not None:
        record["test_log_likelihood"] = log_likelihood
    return record


def load_saved_model(directory: str | os.PathLike, device, checkpoint=False) -> tuple[VAE, dict]:
    """The model of a saved model's directory and a configuration as a run's reads: ``model``,
    and the ``data``, ``training`` and ``algorithm`` its run recorded (where it was saved from a
    run; ``saved_model`` names model.json). A saved model keeps no checkpoints: asking for one is a
    one-line error."""
    directory = Path(directory)
    if checkpoint:
        raise AevbError(f"{directory} is a saved model (model files and a card), which keeps no checkpoints")
    model = VAE.from_model_directory(directory, device)
    record = model.run_record or {}
    config = {key: record[key] for key in ("data", "training", "algorithm") if key in record}
    return model, {"model": model.config.to_dict(), **config, "saved_model": str(directory / MODEL_CONFIG_FILE)}


def saved_model_as_run(directory: str | os.PathLike) -> tuple[dict, list[dict], dict | None]:
    """A saved model as ``aevb compare`` sees a run, read from model.json (no weights loaded): a
    configuration (the model's, and the settings its run recorded), a history of one evaluation
    point (the run's final samples and bounds; none where no run was recorded) and the test log
    p(x) its run kept (None where none was)."""
    meta = read_json(Path(directory) / MODEL_CONFIG_FILE)
    record = meta.get(RUN_RECORD_KEY) if isinstance(meta.get(RUN_RECORD_KEY), dict) else {}
    config = {
        "model": meta.get("model"),
        **{key: record[key] for key in ("data", "training", "algorithm") if key in record},
    }
    summary = record.get("summary") or {}
    history = (
        [{key: summary.get(key) for key in ("samples", "train_bound", "valid_bound", "test_bound")}]
        if summary.get("samples") is not None
        else []
    )
    return config, history, record.get("test_log_likelihood")
