"""``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``, the Hugging Face way of sharing a
model, as methods of every aevb model (:class:`PretrainedModel`, a base of
:class:`aevb.models.vae.VAE`), through huggingface_hub's ``ModelHubMixin`` (the ``[hub]`` extra).

The directory they write holds aevb's own model files (``model.safetensors`` + ``model.json``,
:mod:`aevb.models.files`; no pickle), the Hub's ``config.json`` (the model's configuration) and a
model card, README.md, written from the run the model came from (:mod:`aevb.models.card`). Every
aevb command that reads a run also reads such a directory.

huggingface_hub is imported when a method is first called, not with aevb (it adds a fifth of a
second to every start-up): without it, ``import aevb`` works and the methods say in one line how
to install it.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

from ..errors import AevbError
from ..files import atomic_write_bytes, read_json
from .card import CARD_TAGS, model_card
from .files import CONFIG_FILE, RUN_RECORD_KEY, load_weights, model_config_of, read_model_files, save_model

#: The model card's file name, and the Hub's configuration file (which a run's config.json would be).
CARD_FILE = "README.md"
HUB_CONFIG_FILE = "config.json"


class PretrainedModel:
    """Saving to and loading from a directory or a Hugging Face Hub repository.

    A host class (an ``nn.Module``) has ``config`` (a :class:`~aevb.models.config.ModelConfig`)
    and answers :meth:`model_class_for` (which of its kind builds a configuration). ``run_record``
    is what the run that trained the model recorded (:mod:`aevb.models.card`); ``aevb.load`` sets
    it, so that a loaded run's model saves with the run's card.
    """

    run_record: dict | None = None

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        run_record: dict | None = None,
        push_to_hub: bool = False,
        repo_id: str | None = None,
        **hub_options,
    ) -> str | None:
        """Write the model into ``save_directory``: ``model.safetensors``, ``model.json`` (with the
        run's record), ``config.json`` and the model card README.md, generated from ``run_record``
        (default: :attr:`run_record`, the run the model was loaded from). ``push_to_hub=True,
        repo_id="user/name"`` also uploads it (``hub_options``: huggingface_hub's ``push_to_hub``
        options). Returns the upload's URL, if any. A directory holding an aevb run is refused:
        the Hub's config.json would replace the run's."""
        directory = Path(save_directory)
        _refuse_a_run(directory)
        adapter = _hub_adapter()
        record = self.run_record if run_record is None else run_record
        card_name = (repo_id or directory.name) if push_to_hub else str(directory)
        with _hub_errors(f"the model was saved in {directory}, but not uploaded" if push_to_hub else None):
            return adapter(self, record, card_name).save_pretrained(
                directory, config=self.config.to_dict(), push_to_hub=push_to_hub, repo_id=repo_id, **hub_options
            )

    def push_to_hub(self, repo_id: str, **hub_options) -> str:
        """Upload the model (files as :meth:`save_pretrained` writes them) to the Hub repository
        ``repo_id`` ("user/name"); returns the commit's URL."""
        adapter = _hub_adapter()
        with _hub_errors(f"the model was not uploaded to {repo_id}"):
            return adapter(self, self.run_record, repo_id).push_to_hub(
                repo_id, config=self.config.to_dict(), **hub_options
            )

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, device: str = "cpu", **hub_options):
        """The model saved in a local directory, or in a Hub repository ("user/name", downloaded
        and cached), in evaluation mode on ``device``; its :attr:`run_record` is the run's record
        kept in model.json. ``VAE.from_pretrained`` returns whichever kind of VAE was saved (a
        conditional or full-VB one too); a subclass's, only its own kind."""
        adapter = _hub_adapter()
        where = f"{name_or_path} is no saved model's directory, and the Hugging Face Hub gave none"
        with _hub_errors(where):
            return adapter.from_pretrained(name_or_path, model_class=cls, device=device, **hub_options).model

    @classmethod
    def from_model_directory(cls, directory: str | os.PathLike, device: str = "cpu"):
        """The model in a directory of aevb's model files, built as the class of its kind that
        :meth:`model_class_for` names (a one-line error where ``cls`` is not of that kind), in
        evaluation mode on ``device``, with the run's record model.json keeps."""
        directory = Path(directory)
        meta, tensors = read_model_files(directory)
        where = directory / CONFIG_FILE
        config = model_config_of(meta, where)
        model_class = cls.model_class_for(config)
        if model_class is None:
            raise AevbError(f"{where} describes a model that is no {cls.__name__}; load it with aevb.load")
        model = model_class(config)
        load_weights(model, tensors, directory / "model.safetensors", where)
        record = meta.get(RUN_RECORD_KEY)
        model.run_record = record if isinstance(record, dict) else None
        return model.to(device).eval()

    @classmethod
    def model_class_for(cls, config) -> type | None:
        """The class, ``cls`` or one derived from it, that builds the model of ``config``."""
        raise NotImplementedError


@contextlib.contextmanager
def _hub_errors(what: str | None):
    """The Hub's errors (a repository not found, no connection, a malformed name: OSError and
    ValueError) as one line saying ``what`` happened; None: let them through (a local write's
    OSError, which the command line reports with its file name)."""
    try:
        yield
    except AevbError:
        raise
    except (OSError, ValueError) as error:
        if what is None:
            raise
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise AevbError(f"{what} ({reason})") from None


def is_saved_model(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` is one that ``save_pretrained`` wrote: aevb's model files and the
    Hub's config.json, no run's (whose config.json has a format version)."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file() or not (directory / "model.safetensors").is_file():
        return False
    hub_config = directory / HUB_CONFIG_FILE
    if not hub_config.exists():
        return (directory / CARD_FILE).is_file()  # files copied without config.json, the card kept
    try:
        return "format_version" not in read_json(hub_config)
    except AevbError:
        return False


def _refuse_a_run(directory: Path) -> None:
    """A one-line error where ``directory`` holds an aevb run: its config.json, which
    ``save_pretrained`` would replace with the Hub's, is what evaluate, compare and --resume read."""
    config = directory / HUB_CONFIG_FILE
    if not os.path.lexists(config):
        return
    try:
        is_run = "format_version" in read_json(config)
    except AevbError:
        is_run = False
    if is_run:
        raise AevbError(
            f"{directory} holds an aevb run, whose config.json save_pretrained would replace; "
            "save into another directory (aevb.load reads the run directory itself)"
        )


@functools.cache
def _hub_adapter() -> type:
    """huggingface_hub's ``ModelHubMixin`` fitted to aevb's model files, its card and its
    classes; a one-line error naming the extra when huggingface_hub is not installed."""
    try:
        from huggingface_hub import ModelCard, ModelHubMixin, snapshot_download
    except ImportError:
        raise AevbError("saving and loading pretrained models needs huggingface_hub: pip install 'aevb[hub]'") from None

    class SharedModel(ModelHubMixin, library_name="aevb", tags=list(CARD_TAGS)):
        """An aevb model as the mixin sees it: ``model`` and its run's record."""

        def __init__(self, model, run_record: dict | None = None, card_name: str = "DIRECTORY"):
            self.model = model
            self.run_record = run_record
            self.card_name = card_name  # what the card's usage lines load: the directory or repository

        def generate_model_card(self, *args, **kwargs) -> ModelCard:
            return ModelCard(model_card(self.model.config, self.run_record, name=self.card_name))

        def _save_pretrained(self, save_directory: Path) -> None:
            save_model(self.model, save_directory, self.run_record)
            # Always written (the mixin would keep an older card): the card of these weights.
            atomic_write_bytes(save_directory / CARD_FILE, str(self.generate_model_card()).encode())

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
            model_class: type,
            device: str = "cpu",
            **unused,
        ) -> SharedModel:
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
            model = model_class.from_model_directory(directory, device)
            return cls(model, model.run_record, model_id)

    return SharedModel
