"""Which data a run uses, as config.json records it, and the checks that the data fit the model."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..choices import DEFAULT_DATASET
from ..config import JsonConfig, check_fields
from ..data import DATASET_NAMES, USER_PIXEL_DIVISOR, Dataset, load_dataset, resolve_data_dir
from ..data.given import dataset_of
from ..data.sources import is_streamed
from ..data.splits import USER_SPLIT_SEED
from ..errors import AevbError


@dataclass
class DataConfig(JsonConfig):
    """Which data a run uses; enough to load it again for evaluation."""

    dataset: str = DEFAULT_DATASET
    data_dir: str | None = None
    download: bool = False
    train_limit: int | None = None  # use only the first N training points (Fig. 3's Ntrain)
    pixel_divisor: float | None = None  # grey level k → k / divisor; None: the dataset's (256 for the paper's data)
    merge_valid: bool = False  # train on train + valid, no validation split (the IWAE protocol: 60000 MNIST)
    stream: bool = False  # read a .npy file's rows as training needs them (memory-mapped), not all at once
    image_size: tuple[int, int] | None = None  # (H, W) every image of a folder is resized to; None: they share one size
    # seed of the valid/test hold-out of user data (folder, .npy, .npz); None: USER_SPLIT_SEED. Named datasets keep theirs.
    split_seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise AevbError(f"`dataset` must name a dataset or a file, got {self.dataset!r}")
        if self.train_limit is not None and self.train_limit < 1:
            raise AevbError(f"`train_limit` must be a positive integer, got {self.train_limit}")
        if self.pixel_divisor is not None and not (math.isfinite(self.pixel_divisor) and self.pixel_divisor > 0):
            raise AevbError(f"`pixel_divisor` must be a positive number, got {self.pixel_divisor}")
        if self.stream and self.merge_valid:
            raise AevbError("`merge_valid` joins two splits in memory; it does not go with `stream`")
        if self.image_size is not None:
            self.image_size = tuple(self.image_size)
            if len(self.image_size) != 2 or min(self.image_size) < 1:
                raise AevbError(
                    f"`image_size` must be two positive whole numbers (height, width), got {self.image_size}"
                )
        if self.split_seed is not None and self.split_seed < 0:
            raise AevbError(f"`split_seed` must be a whole number ≥ 0, got {self.split_seed}")


def load_data(data_config: DataConfig) -> Dataset:
    """The dataset a run uses: its validation split appended to the training split when
    ``merge_valid``, then the training split cut to ``train_limit`` points when given."""
    data = load_dataset(
        data_config.dataset,
        data_config.data_dir,
        download=data_config.download,
        pixel_divisor=data_config.pixel_divisor,
        stream=data_config.stream,
        image_size=data_config.image_size,
        split_seed=data_config.split_seed,
    )
    if data_config.merge_valid:
        labels = (
            None
            if data.train_labels is None or data.valid_labels is None
            else torch.cat([data.train_labels, data.valid_labels])
        )
        data = dataclasses.replace(
            data,
            train=torch.cat([data.train, data.valid]),
            train_labels=labels,
            valid=data.valid[:0],
            valid_labels=None if data.valid_labels is None else data.valid_labels[:0],
        )
    limit = data_config.train_limit
    if limit is None:
        return data
    if not 1 <= limit <= data.train.shape[0]:
        raise AevbError(f"train limit {limit} is outside 1..{data.train.shape[0]} for {data.name}")
    labels = None if data.train_labels is None else data.train_labels[:limit]
    train = data.train.first(limit) if is_streamed(data.train) else data.train[:limit]
    return dataclasses.replace(data, train=train, train_labels=labels)


#: The key of config.json's data section that holds :func:`data_fingerprint`.
FINGERPRINT = "values_sha256"
#: The key of config.json's data section that says the data were given to train_run, not loaded.
GIVEN = "given"


def given_data(stored: object, given: object, run_dir, where) -> Dataset | None:
    """The data a run reads again: ``given`` — an aevb :class:`~aevb.data.Dataset`, or the array,
    tensor, torch Dataset or DataLoader the run was given, split again as config.json's data section
    ``stored`` records (:func:`aevb.data.given.dataset_of`) — checked to be the values the run began
    on; None where the caller passes none (the run loads its own). A run trained on data given in
    memory has no file to load: asking it to load one is a one-line error."""
    recorded_given = isinstance(stored, dict) and stored.get(GIVEN)
    if given is None:
        if recorded_given:
            raise AevbError(
                f"{run_dir} was trained on data given to train_run in memory, which no file holds: "
                "pass the same data again in Python (evaluate_run or resume_run with data=...)"
            )
        return None
    if not isinstance(stored, dict):
        raise AevbError(f"{where}: data must be a JSON object, got {stored!r}")
    seed = stored.get("split_seed")
    given = dataset_of(
        given,
        "data",
        pixel_divisor=stored.get("pixel_divisor"),
        split_seed=USER_SPLIT_SEED if seed is None else seed,
    )
    check_same_data(given, stored, run_dir, where)
    return given


def data_fingerprint(data: Dataset) -> str:
    """A SHA-256 of the values a run trains and is evaluated on: every split and its labels, as
    loaded (scaled, merged, cut to the train limit), with their shapes."""
    digest = hashlib.sha256()
    for split in ("train", "valid", "test"):
        for tensor in (getattr(data, split), getattr(data, f"{split}_labels")):
            digest.update(b"none" if tensor is None else f"{tuple(tensor.shape)} {tensor.dtype}".encode())
            # (streamed rows are hashed a chunk at a time: the same digest as the whole)
            for chunk in [] if tensor is None else tensor.chunks() if is_streamed(tensor) else [tensor]:
                digest.update(chunk.detach().cpu().contiguous().numpy())
    return digest.hexdigest()


def check_same_data(data: Dataset, stored: dict, run_dir, where) -> None:
    """A one-line error when ``data`` are not the values the run in ``run_dir`` began on, as the
    data section ``stored`` of its config.json (read from ``where``) records them (a run of an
    aevb that recorded none is not checked): a user's file overwritten with new values of the
    same shape would otherwise be trained on where the run left off."""
    recorded = stored.get(FINGERPRINT)
    if recorded is not None and recorded != data_fingerprint(data):
        raise AevbError(
            f"the data of {run_dir} changed since it began: {data.source} holds other values than "
            f"{where} records (data.{FINGERPRINT}); restore them, or train a new run on the new data"
        )


def value_ranges(data: Dataset) -> dict[str, tuple[float, float]]:
    """(min, max) of each non-empty split; NaN or ±inf show up in them (min/max propagate NaN)."""
    ranges = {}
    for name in ("train", "valid", "test"):
        split = getattr(data, name)
        if is_streamed(split):
            ranges[name] = tuple(split.value_range().tolist())
        elif split.numel():
            ranges[name] = (float(split.min()), float(split.max()))
    return ranges


def stored_data_config(data_config: DataConfig) -> dict:
    """The data configuration as config.json keeps it: paths made absolute, and for a dataset read
    from a data directory the directory actually used (also when it came from ``$AEVB_DATA_DIR``),
    so that evaluate and sample find the data from any working directory and any shell; and for
    user data the seed of their split, so that a later default cannot change the split."""
    stored = dataclasses.asdict(data_config)
    if data_config.dataset not in DATASET_NAMES:
        stored["dataset"] = str(Path(data_config.dataset).expanduser().resolve())
        stored["split_seed"] = USER_SPLIT_SEED if data_config.split_seed is None else data_config.split_seed
    elif data_config.dataset != "mnist-sample" or data_config.data_dir:  # (the sample is embedded)
        stored["data_dir"] = str(resolve_data_dir(data_config.data_dir).expanduser().resolve())
    return stored


def data_config_of_run(stored: dict, data_dir: str | None = None, where: str = "config.json") -> DataConfig:
    """The :class:`DataConfig` a run's config.json describes (``data_dir`` overriding its own; its
    own is used while it exists or while the data are to be downloaded into it, else the default
    directory is searched).
    Runs written before the grey levels of named datasets were k/256 (all but Frey Face) had k/255."""
    if not isinstance(stored, dict):
        raise AevbError(f"{where}: data must be a JSON object, got {stored!r}")
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    values = {key: value for key, value in stored.items() if key in fields}
    check_fields(DataConfig, values, f"{where}: data")
    if not isinstance(values.get("dataset"), str):
        raise AevbError(f"{where}: data names no dataset")
    if "pixel_divisor" not in stored and stored.get("dataset") != "frey":
        values["pixel_divisor"] = USER_PIXEL_DIVISOR
    if data_dir:
        values["data_dir"] = data_dir
    elif values.get("data_dir") and not Path(values["data_dir"]).is_dir() and not values.get("download"):
        values["data_dir"] = None  # moved or deleted: look where a new run would (a download goes where it says)
    return DataConfig.from_dict(values, f"{where}: data")
