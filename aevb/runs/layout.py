"""A run's directory: its files, how a new run claims one, and what identifies a run's settings."""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

from ..checkpoint import check_format_version, parse_json, read_json, read_text_file, refuse_link
from ..config import check_fields
from ..errors import AevbError
from ..training.checkpoints import DIRECTORY as CHECKPOINTS
from ..training.config import Metrics
from .lock import LOCK_FILE

RUN_FORMAT_VERSION = 1


CONFIG_FILE = "config.json"


METRICS_FILE = "metrics.jsonl"


SUMMARY_FILE = "summary.json"


#: Written when training gives up (its error message): resuming would only repeat the divergence.
DIVERGED_FILE = "diverged.json"


FIGURE_FILES = ("samples.png", "reconstructions.png", "bound.png", "manifold.png")


TENSORBOARD_DIRECTORY = "tensorboard"


#: The best model by validation bound (:mod:`aevb.runs.best`).
BEST_DIRECTORY = "best"


#: What ``--overwrite`` removes before a new run starts: every file a run writes, so that nothing
#: of the old run (weights, checkpoints, a manifold of another latent dimension, ...) is mixed with
#: the new one or resumed under its configuration.
RUN_FILES = (
    CONFIG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    DIVERGED_FILE,
    "model.safetensors",
    "model.json",
    *FIGURE_FILES,
    "mlflow.db",
)  # (the last: aevb.runs.loggers.MlflowLogger's store)


RUN_DIRECTORIES = (CHECKPOINTS, BEST_DIRECTORY, TENSORBOARD_DIRECTORY, "wandb", "mlartifacts")  # (the trackers' files)


RUN_FILE_PATTERNS = ("samples-seed*.png", "samples-seed*.npy")  # aevb sample's default outputs


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
    return out.is_dir() and any(
        (out / name).exists() for name in (CONFIG_FILE, METRICS_FILE, "model.safetensors", CHECKPOINTS)
    )


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
    for directory in (CHECKPOINTS, BEST_DIRECTORY):
        if (out / directory).is_dir() and not (out / directory).is_symlink():
            paths += list((out / directory).iterdir())
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


def algorithm_of(config: dict, where: str | Path) -> str:
    """The algorithm a run's config.json (read from ``where``) names, aevb where it names none; a
    one-line error for a value that is no name."""
    algorithm = config.get("algorithm", "aevb")
    if not isinstance(algorithm, str):
        raise AevbError(f"{where}: algorithm must be a name, got {algorithm!r}")
    return algorithm


#: Training settings a run may change and keep its checkpoints: its budget, which ``aevb train
#: --resume RUN --max-samples N`` raises (:mod:`aevb.runs.extend`).
BUDGET_SETTINGS = ("max_samples", "epochs")


def configuration_id(config: dict, *, with_budget: bool = False) -> str:
    """What identifies a run's settings in its checkpoints: a hash of the data (not where it is
    stored), model, training (but its budget, :data:`BUDGET_SETTINGS`: an extended run continues
    from its checkpoints) and algorithm sections of its config.json. ``with_budget``: the hash with
    the budget, which checkpoints of earlier versions name."""
    data = config.get("data")
    data = (
        {key: value for key, value in data.items() if key not in ("data_dir", "download")}
        if isinstance(data, dict)
        else data
    )
    training = config.get("training")
    if isinstance(training, dict) and not with_budget:
        training = {key: value for key, value in training.items() if key not in BUDGET_SETTINGS}
    identity = {
        "data": data,
        "model": config.get("model"),
        "training": training,
        "algorithm": config.get("algorithm"),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def configuration_ids(config: dict) -> tuple[str, str]:
    """The identities a checkpoint of the run of ``config`` may name: :func:`configuration_id`,
    and the one with the budget (checkpoints written by earlier versions)."""
    return configuration_id(config), configuration_id(config, with_budget=True)


def metrics_entry(line: str, where: str | Path) -> dict | None:
    """A metrics line as a dict; None for a line that is no JSON object (cut off by a kill); a
    one-line error naming ``where`` for values that are not a metrics line's (a hand edit)."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return None
    except (ValueError, RecursionError):  # beyond the parser's limits of digits or nesting: a hand edit
        entry = parse_json(line, where)  # (which raises, saying so in one line)
    if not isinstance(entry, dict):
        return None
    # strict_json writes NaN (an algorithm without a bound) as null: null stands for any number.
    check_fields(Metrics, {key: value for key, value in entry.items() if value is not None}, where)
    if not isinstance(entry.get("samples"), int):
        raise AevbError(f"{where}: samples must be an integer, got {entry.get('samples')!r}")
    return entry


def line_samples(line: str, where: str | Path = METRICS_FILE) -> float:
    """The samples count of a metrics line; a line cut off by a kill counts as after everything."""
    entry = metrics_entry(line, where)
    return math.inf if entry is None else entry["samples"]


def metrics_lines(out: Path) -> list[str]:
    try:
        lines = read_text_file(out / METRICS_FILE).splitlines(keepends=True)
    except AevbError:
        if not (out / METRICS_FILE).exists():
            return []
        raise
    return [line for line in lines if line.strip()]


def read_metrics(run_dir: Path) -> list[dict]:
    """The metrics lines of a run, in order (a last line cut off by a kill is left out)."""
    lines = metrics_lines(Path(run_dir))
    entries = (
        metrics_entry(line, f"{Path(run_dir) / METRICS_FILE} line {number}") for number, line in enumerate(lines, 1)
    )
    return [entry for entry in entries if entry is not None]


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
