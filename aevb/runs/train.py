"""Training a run into its directory, and resuming one from its newest checkpoint."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import shlex
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from .. import __version__
from ..checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    named_os_error,
    open_no_follow,
    read_json,
    save_model,
    strict_json,
)
from ..data import Dataset
from ..errors import AevbError, TrainingDiverged, TrainingInterrupted
from ..models.build import build_model
from ..models.conditional import model_inputs
from ..models.vae import VAE, ModelConfig
from ..training import Metrics, TrainConfig, Trainer, TrainingState
from ..training.algorithms import ALGORITHMS, make_algorithm
from ..training.checkpoint_checks import check_checkpoint_fits
from ..training.checkpoints import DIRECTORY as CHECKPOINTS
from ..training.checkpoints import has_checkpoint, load_checkpoint, save_checkpoint
from ..training.distributed import SINGLE_PROCESS, ProcessGroup, from_environment, local_device
from ..training.preflight import Preflight, run_preflight
from ..training.reporting import TrainingWarning
from .data_config import (
    FINGERPRINT,
    check_same_data,
    data_config_of_run,
    data_fingerprint,
    load_data,
    stored_data_config,
)
from .layout import (
    CONFIG_FILE,
    DIVERGED_FILE,
    METRICS_FILE,
    RUN_FORMAT_VERSION,
    SUMMARY_FILE,
    configuration_id,
    create_run_dir,
    line_samples,
    metrics_lines,
    prepare_run_dir,
    read_run_config,
    refuse_links,
    refuse_to_clobber,
)
from .lock import RunLock
from .loggers import LOGGERS
from .outputs import write_figures
from .process import AgreedStop, StopOnSignal
from .progress_report import RunsProgress, report_periodically
from .spec import RunOptions, RunSpec, resolve_device


def train_run(
    spec: RunSpec,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    data: Dataset | None = None,
    command: str | None = None,
    on_metrics: Callable[[Metrics], None] | None = None,
    extra_metrics: Callable[[VAE, Dataset], dict] | None = None,
) -> Path:
    """Train the run ``spec`` describes and write the whole of it into ``out``; return the run
    directory. Everything is checked (:func:`plan_run`) before the directory is made, so a refused
    run leaves nothing behind; ``overwrite`` replaces a run already in ``out`` (else refused).

    ``data`` may be given to skip loading (it must be what ``spec.data`` names). ``command`` is the
    command line recorded in config.json (default: this process's sys.argv). ``on_metrics(metrics)``
    is called with each :class:`~aevb.training.Metrics` once it is written, the hook for a tracker
    that ``spec.run.loggers`` does not name; ``extra_metrics(model, data)`` returns more values for
    each metrics line (e.g. marginal-likelihood estimates for Fig. 3).
    """
    torch_device, group = _device_and_group(spec.run.device)
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
        config = _run_config(spec, plan, data, group, torch_device, command)
        if group.is_main:
            atomic_write_json(out / CONFIG_FILE, config)
        return _train_into(
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


def _device_and_group(device: str) -> tuple[torch.device, ProcessGroup]:
    """The device of this process, and its process group: several processes under torchrun, else one."""
    torch_device = resolve_device(device)
    group = from_environment(torch_device)
    return local_device(torch_device, group), group


def _run_config(
    spec: RunSpec, plan: Preflight, data: Dataset, group: ProcessGroup, torch_device: torch.device, command: str | None
) -> dict:
    """The run's config.json: its settings resolved (the model on the data, the step-size selection
    fitted to the budget), the data it was given (with their fingerprint) and how it ran."""
    return {
        "format_version": RUN_FORMAT_VERSION,
        "aevb_version": __version__,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command if command is not None else shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "data": stored_data_config(spec.data)
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


def resume_run(
    run_dir: str | os.PathLike,
    options: RunOptions | None = None,
    *,
    on_metrics: Callable[[Metrics], None] | None = None,
    extra_metrics: Callable[[VAE, Dataset], dict] | None = None,
) -> Path:
    """Continue the run in ``run_dir`` from its newest checkpoint, with the settings in its
    config.json, to the end it was asked for; ``options`` say how it runs now (default: the
    defaults of :class:`RunOptions`). With the same device the run ends with the parameters, bit
    for bit, that it would have had uninterrupted. ``on_metrics`` and ``extra_metrics`` as for
    :func:`train_run`."""
    options = options if options is not None else RunOptions()
    options.check_loggers_installed()
    out = Path(run_dir)
    config = read_run_config(out)
    if (out / SUMMARY_FILE).exists():
        raise AevbError(f"{out} is a finished run; nothing to resume")
    refuse_links(out)
    refuse_a_diverged_run(out)
    where = str(out / CONFIG_FILE)
    algorithm = config.get("algorithm")
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise AevbError(f"{where} names an unknown algorithm {algorithm!r}")
    data_config = data_config_of_run(config.get("data"), where=where)
    model_config, train_config = run_configs(config, where)
    torch_device, group = _device_and_group(options.device)
    with contextlib.ExitStack() as held:
        if group.is_main:
            held.enter_context(RunLock(out))
        identity = configuration_id(config)
        # Killed before its first checkpoint: start again, which is the same run (it is seeded).
        state = load_checkpoint(out, configuration=identity) if has_checkpoint(out) else None
        samples = state.samples if state is not None else 0
        measured = metrics_lines(out) if group.is_main else []
        if state is None and measured:
            warnings.warn(
                f"{out} has {len(measured)} evaluation points but no checkpoint: it trains again from "
                "the start (the same seeded run), and measures them again",
                TrainingWarning,
            )
        data = load_data(data_config)
        check_same_data(data, config["data"], out, where)
        # Before a file of the run is touched; a model config.json cannot describe is named there.
        plan = run_preflight(
            model_config,
            train_config,
            make_algorithm(algorithm, train_config),
            torch_device,
            data.train.shape[0],
            group,
            per_point_measurements=extra_metrics is not None,
            where=f"{where}: model",
        )
        if state is not None:
            model = build_model(model_config)
            groups = plan.algorithm.parameter_groups(model, 0.0)
            group_sizes = (
                [len(group["params"]) for group in groups] if groups is not None else [len(list(model.parameters()))]
            )
            check_checkpoint_fits(state, model, data.train.shape[0], out, train_config.optimizer, group_sizes)
        if group.is_main:  # metrics after the checkpoint are measured again
            kept = [
                line
                for number, line in enumerate(measured, 1)
                if line_samples(line, f"{out / METRICS_FILE} line {number}") <= samples
            ]
            atomic_write_bytes(out / METRICS_FILE, "".join(kept).encode())
        return _train_into(
            out,
            data,
            plan,
            options,
            group,
            torch_device,
            on_metrics=on_metrics,
            extra_metrics=extra_metrics,
            resume=state,
            configuration=identity,
        )


def refuse_a_diverged_run(out: Path) -> None:
    """A one-line error for a run whose training gave up (its checkpoints would only diverge
    again), with the reason it gave then."""
    if not (out / DIVERGED_FILE).is_file():
        return
    reason = read_json(out / DIVERGED_FILE).get("error")  # (read_json: a JSON object, or one line)
    reason = reason if isinstance(reason, str) else "training diverged"
    raise TrainingDiverged(
        f"{out} is a diverged run: {reason}; resuming would only repeat it, so start a new run with that change"
    )


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


def run_configs(config: dict, where: str) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configurations of a run's config.json, checked with the rules of a
    new run (one-line errors naming ``where`` and the setting)."""
    for section in ("model", "training"):
        if section not in config:
            raise AevbError(f"{where} has no {section} section (a JSON object, as in a run's config.json)")
        if not isinstance(config.get(section), dict):
            raise AevbError(f"{where}: {section} must be a JSON object, got {config.get(section)!r}")
    return (
        ModelConfig.from_dict(config["model"], f"{where}: model"),
        TrainConfig.from_dict(config["training"], f"{where}: training"),
    )


def _train_into(
    out: Path,
    data: Dataset,
    plan: Preflight,
    options: RunOptions,
    group: ProcessGroup,
    torch_device: torch.device,
    *,
    on_metrics: Callable[[Metrics], None] | None,
    extra_metrics: Callable[[VAE, Dataset], dict] | None,
    resume: TrainingState | None = None,
    configuration: str | None = None,
) -> Path:
    """Train (or continue training) the run ``plan`` checked in the prepared run directory ``out``,
    checkpointing as it goes (every ``options.checkpoint_every`` steps, and at every evaluation
    point); then write the model, figures and summary."""
    model_config, train_config = plan.model_config, plan.config
    data = data.to(torch_device)
    # Seeded: a run with `initialise` false trains from the weights built here (a resumed one
    # replaces them), and the same settings must give the same model.
    torch.manual_seed(train_config.seed)
    model = build_model(model_config).to(torch_device)
    # A conditional model's datapoints are rows [x, one-hot(y)]: labels travel with their images.
    train, valid, test = (
        model_inputs(getattr(data, split), getattr(data, f"{split}_labels"), model_config)
        for split in ("train", "valid", "test")
    )
    trainer = Trainer(
        model,
        train,
        train_config,
        valid=valid if valid.shape[0] else None,
        test=test if options.track_test else None,
        algorithm=plan.algorithm,
        group=group,
        threads=options.threads,
        data_name=data.source,
        preflight=plan,
    )
    checkpoint = (lambda state: save_checkpoint(out, state, configuration=configuration)) if group.is_main else None
    with StopOnSignal() as signalled:
        stop = signalled if group.world_size == 1 else AgreedStop(signalled, group, torch_device)
        if not group.is_main:  # the other processes train in step with rank 0 and write nothing
            trainer.fit(progress=False, resume=resume, stop_requested=stop)
            group.all_agree(True, torch_device)  # wait for rank 0 to finish writing
            return out
        trackers = _open_loggers(options.loggers, out)
        started = time.perf_counter()
        with open_no_follow(out / METRICS_FILE, "a") as metrics_file:

            def record(metrics: Metrics) -> None:
                line = metrics.to_dict() | (extra_metrics(model, data) if extra_metrics is not None else {})
                try:
                    metrics_file.write(json.dumps(strict_json(line)) + "\n")
                    metrics_file.flush()
                    os.fsync(metrics_file.fileno())
                except OSError as error:  # a full disk names no file by itself
                    raise named_os_error(error, out / METRICS_FILE) from None
                for tracker in trackers:
                    tracker.log(metrics)
                if on_metrics is not None:
                    on_metrics(metrics)

            report = RunsProgress({out.name: train_config.total_samples(train.shape[0])}, out.parent)
            try:
                with report_periodically(
                    report, lambda line: print(line, file=sys.stderr, flush=True), options.report_every
                ):
                    result = trainer.fit(
                        on_metrics=record,
                        progress=options.progress,
                        on_checkpoint=checkpoint,
                        checkpoint_every=options.checkpoint_every,
                        resume=resume,
                        stop_requested=stop,
                    )
            except TrainingInterrupted as interrupted:
                interrupted.signal = signalled.received
                raise
            except TrainingDiverged as diverged:  # recorded, so that a resume says so instead of repeating it
                atomic_write_json(out / DIVERGED_FILE, {"error": str(diverged)})
                raise
            finally:
                for tracker in trackers:
                    tracker.close()
    save_model(model, out)
    write_figures(out, model, data, train_config.binarize, result.history)
    # summary.json comes last: it marks the run finished (resume refuses a finished run).
    atomic_write_json(
        out / SUMMARY_FILE, strict_json(_summary(result, trainer.algorithm, model, time.perf_counter() - started))
    )
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # the run is complete: its model is the result
    group.all_agree(True, torch_device)
    return out


def _summary(result, algorithm, model: VAE, wall_seconds: float) -> dict:
    """summary.json's numbers: the chosen step size and the trials, the last evaluation point,
    the engine, and what the algorithm adds (full VB: its KL term and full bound)."""
    last = result.history[-1]
    return {
        "step_size": result.step_size,
        "step_size_trials": [dataclasses.asdict(t) for t in result.step_size_trials],
        "samples": last.samples,
        "epochs": last.epoch,
        "train_bound": last.train_bound,
        "valid_bound": last.valid_bound,
        "test_bound": last.test_bound,
        "training_seconds": last.seconds,
        "samples_per_second": last.samples_per_second,
        "engine": algorithm.engine_used,  # how gradients were computed
        "steps_by_threads": {str(count): steps for count, steps in result.steps_by_threads.items()},
        "wall_seconds": wall_seconds,
    } | algorithm.run_summary(model, last.train_bound)


def _open_loggers(names: tuple[str, ...], out: Path) -> list:
    """The trackers of a run in ``out``, given its config.json."""
    if not names:
        return []
    config = read_run_config(out)
    return [LOGGERS[name](out, config) for name in names]
