"""Models shared the way the Hugging Face tools share them (the ``[hub]`` extra):
:func:`save_pretrained` / :func:`from_pretrained` through huggingface_hub's ``ModelHubMixin``, on
a local directory or a Hub repository, in aevb's own model files (``model.safetensors`` +
``model.json``, no pickle), so a saved model is also a directory :func:`aevb.checkpoint.load_model`
reads. The Hub adds a model card (README.md) and, with ``push_to_hub``, the upload.
"""

from __future__ import annotations

import os
from pathlib import Path

from .checkpoint import load_model, save_model
from .errors import AevbError
from .models.vae import VAE

try:
    from huggingface_hub import ModelHubMixin, snapshot_download
except ImportError:  # the extra is not installed: the functions below say how to get it
    ModelHubMixin = None


def _require_hub() -> None:
    if ModelHubMixin is None:
        raise AevbError("sharing models through the Hugging Face Hub needs huggingface_hub: pip install 'aevb[hub]'")


if ModelHubMixin is not None:

    class PretrainedVAE(ModelHubMixin, library_name="aevb", tags=["aevb", "variational-autoencoder", "vae"]):
        """A trained model as huggingface_hub's mixin sees it: ``.model`` is the aevb model."""

        def __init__(self, model: VAE):
            self.model = model

        def _save_pretrained(self, save_directory: Path) -> None:
            save_model(self.model, save_directory)

        @classmethod
        def _from_pretrained(
            cls,
            *,
            model_id: str,
            revision: str | None,
            cache_dir,
            force_download: bool,
            local_files_only: bool,
            token,
            device: str = "cpu",
            **unused,
        ) -> "PretrainedVAE":
            directory = Path(model_id)
            if not directory.is_dir():  # a Hub repository: its files, cached
                directory = Path(
                    snapshot_download(
                        repo_id=model_id,
                        revision=revision,
                        cache_dir=cache_dir,
                        force_download=force_download,
                        local_files_only=local_files_only,
                        token=token,
                    )
                )
            return cls(load_model(directory, device))


def save_pretrained(model: VAE, directory: str | os.PathLike, **hub_options) -> str | None:
    """Write ``model`` into ``directory`` (model files and a model card); ``push_to_hub=True,
    repo_id=...`` also uploads it. Returns the upload's URL, if any. A run directory is refused:
    the Hub's config.json would replace the run's, which evaluate, compare and resume read."""
    from .runs.layout import is_run_dir

    if is_run_dir(Path(directory)):
        raise AevbError(
            f"{directory} holds an aevb run, whose config.json save_pretrained would replace; "
            "save into another directory (aevb.load reads the run directory itself)"
        )
    _require_hub()
    # config.json, as the Hub's tools look for it: the same configuration as model.json
    return PretrainedVAE(model).save_pretrained(directory, config=model.config.to_dict(), **hub_options)


def from_pretrained(name_or_path: str | os.PathLike, *, device: str = "cpu", **hub_options) -> VAE:
    """The model saved in a local directory or a Hub repository (``user/name``), in evaluation
    mode on ``device``."""
    _require_hub()
    return PretrainedVAE.from_pretrained(name_or_path, device=device, **hub_options).model.eval()
