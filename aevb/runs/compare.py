"""Comparing runs: their bound curves on one figure, labelled by the settings in which they differ,
and a table of their final numbers (``aevb compare``)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import AevbError
from ..training import TrainConfig
from .evaluations import latest_log_likelihood
from .layout import (
    CONFIG_FILE,
    DIVERGED_FILE,
    SUMMARY_FILE,
    flat_config,
    read_metrics,
    read_run_config,
    refuse_to_replace,
)
from .saved_model import is_saved_model, saved_model_as_run

#: Settings that say where or how a run was made, not what it is: never a label.
_INCIDENTAL = {
    "data.data_dir",
    "data.download",
    "data.source",
    "created",
    "command",
    "aevb_version",
    "device",
    "threads",
    "processes",
    "format_version",
    "data.values_sha256",
}  # (a hash says nothing to a reader; the data's settings do)


def _settings(config: dict) -> dict[str, object]:
    """A run's settings by ``section.name`` (lists as tuples), without the incidental ones."""
    return {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in flat_config(config).items()
        if key not in _INCIDENTAL
    }


#: Longest label the figure's legend shows; runs that differ in more settings than that holds are
#: named there by their directories (the table printed beside it has the settings).
LEGEND_LABEL_CHARS = 70


def _short_names(paths: list[Path]) -> list[str]:
    """The runs' directory names, with the parent's where two would read the same."""
    names = [path.name for path in paths]
    return [f"{path.parent.name}/{path.name}" if names.count(path.name) > 1 else path.name for path in paths]


def differing_settings(configs: list[dict]) -> list[dict[str, object]]:
    """For each run, the settings whose values are not the same in every run (by setting name).
    A setting that a run's config does not record (written by an older aevb) is no difference:
    it is compared among the runs that record it, and left out of the others' labels."""
    flats = [_settings(config) for config in configs]
    keys = sorted({key for flat in flats for key in flat})
    differing = [key for key in keys if len({repr(flat[key]) for flat in flats if key in flat}) > 1]
    return [{key.split(".")[-1]: flat[key] for key in differing if key in flat} for flat in flats]


def run_status(run_dir: Path) -> str:
    """ "finished" (its summary.json is written), "diverged" (its training gave up) or "unfinished"
    (still training, or stopped: its numbers are not final)."""
    if (run_dir / SUMMARY_FILE).is_file():
        return "finished"
    return "diverged" if (run_dir / DIVERGED_FILE).is_file() else "unfinished"


def _planned_samples(run_dir: Path, config: dict) -> int | None:
    """The training samples the run was asked for (None where its config.json does not say)."""
    training, data = config.get("training"), config.get("data")
    size = data.get("train_size") if isinstance(data, dict) else None
    if not isinstance(training, dict) or not isinstance(size, int) or size < 1:
        return None
    return TrainConfig.from_run(training, f"{run_dir / CONFIG_FILE}: training").total_samples(size)


def compare_runs(
    run_dirs: list[str | os.PathLike], out: str | os.PathLike | None = None, overwrite: bool = False
) -> list[dict]:
    """One row per run: its directory, a label (the directory's name and the settings in which
    the runs differ), its last evaluation point's samples and bounds (train, validation, test; nats
    per datapoint), the newest test log p(x) that ``aevb evaluate --nll`` kept in it and its k
    (``test_log_likelihood``, ``test_log_likelihood_samples``; None where none was kept), whether
    the run is finished, diverged or unfinished (:func:`run_status`) and the samples it was to
    train (``planned_samples``). A saved model's directory (``model.save_pretrained``) is a row of
    the numbers its run recorded, status "saved model", one point on the figure. With
    ``out`` (.png), their bound curves on one figure; an ``out`` that exists is replaced only with
    ``overwrite``."""
    if not run_dirs:
        raise AevbError("name at least one run directory to compare")
    if out is not None:
        out = Path(out)
        if out.suffix.lower() != ".png":
            raise AevbError(f"`out` {out}: the comparison figure is a .png")
        refuse_to_replace(out, overwrite)
    paths = [Path(run_dir) for run_dir in run_dirs]
    saved = {path: saved_model_as_run(path) for path in paths if is_saved_model(path)}  # (its run's final point)
    configs = [saved[path][0] if path in saved else read_run_config(path) for path in paths]
    histories = [saved[path][1] if path in saved else read_metrics(path) for path in paths]
    labels = []
    for path, differing in zip(paths, differing_settings(configs)):
        settings = ", ".join(f"{name}={value}" for name, value in differing.items())
        labels.append(f"{path.name} ({settings})" if settings else path.name)
    if out is not None:
        from ..figures import save_bound_comparison

        legend = labels if max(map(len, labels)) <= LEGEND_LABEL_CHARS else _short_names(paths)
        save_bound_comparison(list(zip(legend, histories)), out)
    rows = []
    for path, label, history, config in zip(paths, labels, histories, configs):
        last = history[-1] if history else {}
        kept = latest_log_likelihood(path) or (saved[path][2] if path in saved else None) or {}
        rows.append(
            {
                "run": str(path),
                "label": label,
                "samples": last.get("samples"),
                "train_bound": last.get("train_bound"),
                "valid_bound": last.get("valid_bound"),
                "test_bound": last.get("test_bound"),
                "status": "saved model" if path in saved else run_status(path),
                # the newest importance-sampled log p(x) that aevb evaluate kept in the run, if any
                "test_log_likelihood": kept.get("log_likelihood"),
                "test_log_likelihood_samples": kept.get("log_likelihood_samples"),
                "planned_samples": _planned_samples(path, config),
            }
        )
    return rows
