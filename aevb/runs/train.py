"""Training a new run into its directory: the run's spec resolved against the data and checked
before anything is written (:func:`plan_run`), then its config.json, then the training
(:func:`aevb.runs.fit.fit_into`)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import shlex
import sys
from pathlib import Path
from typing import Callable

import torch

from .. import __version__
from ..checkpoint import (
    atomic_write_json,
)
from ..choices import USER_SPLIT_SEED
from ..data import Dataset
from ..data.given import dataset_of
from ..errors import AevbError
from ..models.vae import VAE
from ..training import Metrics
from ..training.algorithms import make_algorithm
from ..training.distributed import SINGLE_PROCESS, ProcessGroup
from ..training.early_stopping import require_validation_for_early_stopping
from ..training.preflight import Preflight, run_preflight
from ..training.trainer import TrainingData
from .data_config import (
    FINGERPRINT,
    GIVEN,
    data_fingerprint,
    load_data,
    stored_data_config,
)
from .fit import device_and_group, fit_into
from .layout import (
    CONFIG_FILE,
    RUN_FORMAT_VERSION,
    configuration_id,
    create_run_dir,
    prepare_run_dir,
    refuse_to_clobber,
)
from .lock import RunLock
from .spec import RunSpec, resolve_device


def train_run(
    spec: RunSpec,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    data: Dataset | TrainingData | None = None,
    command: str | None = None,
    on_metrics: Callable[[Metrics], None] | None = None,
    extra_metrics: Callable[[VAE, Dataset], dict] | None = None,
) -> Path:
    """Train the run ``spec`` describes and write the whole of it into ``out``; return the run
    directory. Everything is checked (:func:`plan_run`) before the directory is made, so a refused
    run leaves nothing behind; ``overwrite`` replaces a run already in ``out`` (else refused).

    ``data`` may be a :class:`~aevb.data.Dataset` to skip loading (it must be what ``spec.data``
    names), or the user's own data instead of ``spec.data``'s: a tensor or numpy array of any real
    dtype (rows or images), a map-style torch Dataset or a DataLoader, split as a user's ``.npy``
    file is (:func:`aevb.data.given.dataset_of`, seeded by ``spec.data.split_seed``). The run then
    records the data's fingerprint, not a file: evaluating or resuming it takes the same data again
    (``data=``). ``command`` is the
    command line recorded in config.json (default: this process's sys.argv). ``on_metrics(metrics)``
    is called with each :class:`~aevb.training.Metrics` once it is written, the hook for a tracker
    that ``spec.run.loggers`` does not name; ``extra_metrics(model, data)`` returns more values for
    each metrics line (e.g. marginal-likelihood estimates for Fig. 3).
    """
    torch_device, group = device_and_group(spec.run.device)
    given = data is not None and not isinstance(data, Dataset)
    if given:
        data = dataset_of(data, "data", pixel_divisor=spec.data.pixel_divisor, split_seed=_split_seed(spec))
    if data is None:
        data = load_data(spec.data)
    plan = plan_run(spec, data, torch_device, group, per_point_measurements=extra_metrics is not None)
    spec.run.check_loggers_installed()  # before anything is written into the run directory
    out = Path(out)
    with contextlib.ExitStack() as held:
        if group.is_main:  # only rank 0 writes; the others learn whether it could
            try:
                # Locked before anything is removed: --overwrite must not pull a run from under
                # a process still training it.
                refuse_to_clobber(out, overwrite)  # before the lock file touches the directory
                held.enter_context(RunLock(create_run_dir(out)))
                out = prepare_run_dir(out, overwrite)
            except AevbError:
                group.all_agree(False, torch_device)
                raise
        if not group.all_agree(True, torch_device):
            raise AevbError(f"rank 0 could not prepare the run directory {out}")
        config = _run_config(spec, plan, data, group, torch_device, command, given)
        if group.is_main:
            atomic_write_json(out / CONFIG_FILE, config)
        return fit_into(
            out,
            data,
            plan,
            spec.run,
            group,
            torch_device,
            configuration=configuration_id(config),
            on_metrics=on_metrics,
            extra_metrics=extra_metrics,
        )


def plan_run(
    spec: RunSpec,
    data: Dataset,
    device: torch.device,
    group: ProcessGroup = SINGLE_PROCESS,
    per_point_measurements: bool = False,
) -> Preflight:
    """The model ``spec`` asks for on ``data`` (:meth:`ModelSpec.resolve`), and the preflight of its
    training (:func:`aevb.training.preflight.run_preflight`), the data's values included: one-line
    errors for anything that would fail once training starts. Nothing is allocated or written."""
    algorithm = make_algorithm(spec.algorithm, spec.training)
    model_config = spec.model.resolve(data, algorithm.model_options)
    require_validation_for_early_stopping(spec.training.early_stopping, data.valid.shape[0], algorithm.has_bound)
    splits = {f"{data.name}: the {split} split": getattr(data, split) for split in ("train", "valid", "test")}
    return run_preflight(
        model_config,
        spec.training,
        algorithm,
        device,
        data.train.shape[0],
        group,
        per_point_measurements=per_point_measurements,
        splits=splits,
    )


def _run_config(
    spec: RunSpec,
    plan: Preflight,
    data: Dataset,
    group: ProcessGroup,
    torch_device: torch.device,
    command: str | None,
    given: bool = False,
) -> dict:
    """The run's config.json: its settings resolved (the model on the data, the step-size selection
    fitted to the budget), the data it was given (with their fingerprint) and how it ran. Data
    ``given`` in memory are described, not named: no file can load them again."""
    data_settings = {GIVEN: True, "split_seed": _split_seed(spec)} if given else stored_data_config(spec.data)
    return {
        "format_version": RUN_FORMAT_VERSION,
        "aevb_version": __version__,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command if command is not None else shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "data": data_settings
        | {
            "name": data.name,
            "source": data.source,
            "pixel_divisor": data.pixel_divisor,
            "train_size": data.train.shape[0],
            "valid_size": data.valid.shape[0],
            "test_size": data.test.shape[0],
            FINGERPRINT: data_fingerprint(data),
        },  # resume refuses data that changed since
        "model": plan.model_config.to_dict(),
        "training": plan.config.to_dict(),
        "algorithm": spec.algorithm,
        "device": str(torch_device),
        "threads": spec.run.threads or "adaptive",  # how many ran each step: summary.json
        "processes": group.world_size,
    }


def resolved_config(spec: RunSpec, data: Dataset | None = None) -> dict:
    """The data, model, training and algorithm sections that a run of ``spec`` would write into its
    config.json (the model resolved against the data, the step-size selection fitted to the
    training set), and its run options: ``aevb train --print-config``. Checked as :func:`train_run`
    checks them, on one process; nothing is trained, written or downloaded (the data must be there
    already). A ``--config`` file of this shape gives the same spec back."""
    if data is None:
        try:
            data = load_data(dataclasses.replace(spec.data, download=False))
        except AevbError as error:
            if not spec.data.download:
                raise
            raise AevbError(f"{error} (resolving a configuration downloads nothing)") from None
    plan = plan_run(spec, data, resolve_device(spec.run.device))
    return {
        "data": stored_data_config(spec.data),
        "model": plan.model_config.to_dict(),
        "training": plan.config.to_dict(),
        "algorithm": spec.algorithm,
        "run": spec.run.to_dict(),
    }


def _split_seed(spec: RunSpec) -> int:
    """The seed that splits data given to :func:`train_run` (``data.split_seed``, else the default)."""
    return USER_SPLIT_SEED if spec.data.split_seed is None else spec.data.split_seed
