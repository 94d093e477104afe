"""Models shared the way the Hugging Face tools share them (the ``[hub]`` extra), as functions:
:func:`save_pretrained` and :func:`from_pretrained` are the models' own methods
(``model.save_pretrained(directory)``, ``VAE.from_pretrained(directory or "user/name")``;
:mod:`aevb.models.pretrained`), with a run directory refused by every file a run writes.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import AevbError
from .models.vae import VAE
from .runs.layout import is_run_dir


def save_pretrained(model: VAE, directory: str | os.PathLike, **hub_options) -> str | None:
    """``model.save_pretrained(directory, **hub_options)``: the model files, config.json and the
    model card (from the run the model was loaded from); ``push_to_hub=True, repo_id=...`` also
    uploads it. Returns the upload's URL, if any. A run directory, finished or not, is refused:
    the Hub's config.json would replace the run's, which evaluate, compare and resume read."""
    if is_run_dir(Path(directory)):
        raise AevbError(
            f"{directory} holds an aevb run, whose config.json save_pretrained would replace; "
            "save into another directory (aevb.load reads the run directory itself)"
        )
    return model.save_pretrained(directory, **hub_options)


def from_pretrained(name_or_path: str | os.PathLike, *, device: str = "cpu", **hub_options) -> VAE:
    """``VAE.from_pretrained(name_or_path)``: the model saved in a local directory or a Hub
    repository (``user/name``), of whichever kind was saved, in evaluation mode on ``device``."""
    return VAE.from_pretrained(name_or_path, device=device, **hub_options)
