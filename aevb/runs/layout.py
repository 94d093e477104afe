"""A run's directory: its files, how a new run claims one, and what identifies a run's settings."""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

from ..checkpoint import check_format_version, read_json, refuse_link
from ..errors import AevbError
from ..training.checkpoints import DIRECTORY as CHECKPOINTS
from .lock import LOCK_FILE


RUN_FORMAT_VERSION = 1


CONFIG_FILE = "config.json"


METRICS_FILE = "metrics.jsonl"


SUMMARY_FILE = "summary.json"


#: Written when training gives up (its error message): resuming would only repeat the divergence.
DIVERGED_FILE = "diverged.json"


FIGURE_FILES = ("samples.png", "reconstructions.png", "bound.png", "manifold.png")


TENSORBOARD_DIRECTORY = "tensorboard"


#: What ``--overwrite`` removes before a new run starts: every file a run writes, so that nothing
#: of the old run (weights, checkpoints, a manifold of another latent dimension, ...) is mixed with
#: the new one or resumed under its configuration.
RUN_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, DIVERGED_FILE, "model.safetensors", "model.json", *FIGURE_FILES,
             "mlflow.db")                                     # (the last: aevb.runs.loggers.MlflowLogger's store)


RUN_DIRECTORIES = (CHECKPOINTS, TENSORBOARD_DIRECTORY, "wandb", "mlartifacts")   # (the trackers' files)


RUN_FILE_PATTERNS = ("samples-seed*.png", "samples-seed*.npy")   # aevb sample's default outputs


def create_run_dir(out: Path) -> Path:
    """``out`` as a directory, created if missing (after :func:`refuse_to_clobber`); a one-line
    error when it cannot be."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AevbError(f"cannot create run directory {out}: {error.strerror}") from None
    return out


def holds_run(out: Path) -> bool:
    return out.is_dir() and any((out / name).exists() for name in
                                (CONFIG_FILE, METRICS_FILE, "model.safetensors", CHECKPOINTS))


def is_run_dir(directory: Path) -> bool:
    """Whether ``directory`` holds a run, finished or not: a file only a run writes (metrics,
    summary, checkpoints, the lock), or a run's config.json (the one beside a model that
    :func:`aevb.hub.save_pretrained` wrote has no format version)."""
    directory = Path(directory)
    if any(os.path.lexists(directory / name) for name in (METRICS_FILE, SUMMARY_FILE, CHECKPOINTS, LOCK_FILE)):
        return True
    try:
        return "format_version" in read_json(directory / CONFIG_FILE)
    except AevbError:
        return False


def refuse_a_file(out: Path) -> None:
    """A one-line error when the output directory ``out`` is an existing file."""
    if out.exists() and not out.is_dir():
        raise AevbError(f"`out` {out} exists and is not a directory")


def refuse_to_replace(out: Path, overwrite: bool) -> None:
    """A one-line error when the output file ``out`` is a directory, or exists and ``overwrite``
    is not given: a figure or array written before is not lost to a second command."""
    if out.is_dir():
        raise AevbError(f"`out` {out} is a directory; name a file")
    if out.exists() and not overwrite:
        raise AevbError(f"`out` {out} exists; choose another `out` or pass `overwrite`")


def refuse_links(out: Path) -> None:
    """A one-line error when a file or folder a run writes in ``out`` (its checkpoints' too) is a
    symbolic link (:func:`~aevb.checkpoint.refuse_link`), before anything is written there."""
    names = (*RUN_FILES, *RUN_DIRECTORIES, LOCK_FILE)
    paths = [out / name for name in names] + [path for pattern in RUN_FILE_PATTERNS for path in out.glob(pattern)]
    if (out / CHECKPOINTS).is_dir() and not (out / CHECKPOINTS).is_symlink():
        paths += list((out / CHECKPOINTS).iterdir())
    for path in paths:
        refuse_link(path)


def refuse_to_clobber(out: Path, overwrite: bool) -> None:
    """A one-line error when ``out`` is a file, holds a link in place of a run's file, or holds a
    run and ``overwrite`` is not given."""
    refuse_a_file(out)
    refuse_links(out)
    if holds_run(out) and not overwrite:
        raise AevbError(f"{out} already holds a run; choose another `out` or pass `overwrite`")


def prepare_run_dir(out: Path, overwrite: bool) -> Path:
    """Create ``out`` or check that it holds no run; refuse to clobber one unless ``overwrite``,
    which removes everything a run wrote there (files, checkpoints, TensorBoard logs)."""
    out = Path(out)
    refuse_to_clobber(out, overwrite)
    if holds_run(out):
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for pattern in RUN_FILE_PATTERNS:
            for path in out.glob(pattern):
                path.unlink(missing_ok=True)
        for name in RUN_DIRECTORIES:
            shutil.rmtree(out / name, ignore_errors=True)
            if (out / name).exists():
                raise AevbError(f"cannot remove {out / name} of the run being replaced")
    return create_run_dir(out)


def default_run_dir(dataset: str, latent_dim: int) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{Path(dataset).stem}-z{latent_dim}-{stamp}"


def read_run_config(run_dir: Path) -> dict:
    """A run's config.json, with one-line errors for a missing run or another run format."""
    if run_dir.exists() and not run_dir.is_dir():
        hint = f"; its run directory is {run_dir.parent}" if (run_dir.parent / CONFIG_FILE).is_file() else ""
        raise AevbError(f"{run_dir} is a file, not a run directory{hint}")
    if not run_dir.is_dir():
        raise AevbError(f"run directory {run_dir} not found")
    if not (run_dir / CONFIG_FILE).exists():
        raise AevbError(f"{run_dir} is not a run directory: it has no {CONFIG_FILE} (aevb train writes one)")
    config = read_json(run_dir / CONFIG_FILE)
    check_format_version(config, RUN_FORMAT_VERSION, run_dir / CONFIG_FILE)
    return config


def configuration_id(config: dict) -> str:
    """What identifies a run's settings in its checkpoints: a hash of the data (not where it is
    stored), model, training and algorithm sections of its config.json."""
    data = config.get("data")
    data = {key: value for key, value in data.items() if key not in ("data_dir", "download")} \
        if isinstance(data, dict) else data
    identity = {"data": data, "model": config.get("model"), "training": config.get("training"),
                "algorithm": config.get("algorithm")}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def line_samples(line: str) -> float:
    """The samples count of a metrics line; a line cut off by a kill counts as after everything."""
    try:
        return json.loads(line)["samples"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


def metrics_lines(out: Path) -> list[str]:
    try:
        lines = (out / METRICS_FILE).read_text().splitlines(keepends=True)
    except FileNotFoundError:
        return []
    return [line for line in lines if line.strip()]


def read_metrics(run_dir: Path) -> list[dict]:
    """The metrics lines of a run, in order (a last line cut off by a kill is left out)."""
    metrics = []
    for line in metrics_lines(Path(run_dir)):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            metrics.append(entry)
    return metrics


def flat_config(config: dict) -> dict[str, object]:
    """A run's config.json flattened to ``section.name`` → value (top-level values by their own
    name): what trackers take as parameters and what runs are compared by."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": item for name, item in value.items()})
        else:
            flat[key] = value
    return flat
