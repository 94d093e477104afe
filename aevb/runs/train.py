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
from ..checkpoint import (atomic_write_bytes, atomic_write_json, named_os_error, open_no_follow, read_json, save_model,
                          strict_json)
from ..models.conditional import model_inputs
from ..data import Dataset
from ..training.distributed import check_distributable, from_environment, local_device
from ..errors import AevbError, TrainingDiverged, TrainingInterrupted
from ..models.build import build_model, check_buildable
from ..models.families import PAPER_POSTERIOR
from ..models.vae import VAE, ModelConfig
from ..training import Metrics, Trainer, TrainConfig, require_training_step_memory
from ..training.checkpoints import DIRECTORY as CHECKPOINTS, check_checkpoint_fits, has_checkpoint, load_checkpoint, \
    save_checkpoint
from ..training.reporting import TrainingWarning
from ..training.step_size import check_step_size_choosable
from .data_config import (FINGERPRINT, DataConfig, check_data_fits_model, check_same_data, data_config_of_run,
                          data_fingerprint, load_data, stored_data_config)
from .layout import (CONFIG_FILE, DIVERGED_FILE, METRICS_FILE, RUN_FORMAT_VERSION, SUMMARY_FILE, configuration_id,
                     create_run_dir, line_samples, metrics_lines, prepare_run_dir, read_run_config, refuse_links,
                     refuse_to_clobber)
from .lock import RunLock
from .loggers import LOGGERS, check_loggers
from .outputs import write_figures
from .process import AgreedStop, StopOnSignal
from .progress_report import RunsProgress, report_periodically
from .settings import fit_selection_to_budget, model_config_for, resolve_device


DEFAULT_CHECKPOINT_EVERY = 2000   # steps between checkpoints, besides one at every evaluation point


def train_run(out: str | os.PathLike, data_config: DataConfig, model_options: dict, train_config: TrainConfig,
              *, device: str = "auto", overwrite: bool = False, progress: bool = True,
              tensorboard: bool = False, loggers: tuple[str, ...] = (), data: Dataset | None = None,
              command: str | None = None, on_metrics: Callable[[Metrics], None] | None = None,
              algorithm: str = "aevb", track_test: bool = False,
              extra_metrics: Callable[[VAE, Dataset], dict] | None = None,
              checkpoint_every: int | None = None, threads: int | None = None,
              report_every: float | None = None) -> Path:
    """Train a VAE and write the whole run into ``out``; return the run directory.

    ``model_options`` are keyword arguments of :func:`model_config_for` (latent_dim, hidden_units,
    ...). ``data`` may be given to skip loading (it must be what ``data_config`` names).
    ``command`` is the command line recorded in config.json (default: this process's sys.argv).
    ``algorithm`` names the learning algorithm (``aevb``, or a baseline: ``wake-sleep``, ``mcem``);
    ``track_test`` adds the test bound to every metrics line; ``extra_metrics(model, data)`` returns
    more values for each metrics line (e.g. marginal-likelihood estimates for Fig. 3).
    ``loggers`` names experiment trackers of :data:`aevb.runs.loggers.LOGGERS` ("tensorboard",
    "wandb", "mlflow"; ``tensorboard=True`` adds the first) that get every evaluation point;
    ``on_metrics(metrics)`` is called with each :class:`~aevb.training.Metrics` once it is written,
    the hook for any other tracker. ``threads`` fixes the CPU threads of the training steps
    (default: the adaptive policy of :mod:`aevb.threads`). ``report_every``: seconds between
    progress lines on stderr (samples done, speed, time left: :mod:`aevb.runs.progress_report`),
    for logs where no bar is shown; None (the default) writes none.
    """
    from ..baselines import ALGORITHMS, make_algorithm

    if algorithm not in ALGORITHMS:
        raise AevbError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    torch_device = resolve_device(device)
    group = from_environment(torch_device)          # several processes under torchrun, else one
    torch_device = local_device(torch_device, group)
    trainer_algorithm = make_algorithm(algorithm, train_config)
    check_distributable(group, trainer_algorithm, train_config.batch_size, extra_metrics is not None,
                        model_options.get("posterior", PAPER_POSTERIOR))
    check_step_size_choosable(trainer_algorithm, train_config)
    if data is None:
        data = load_data(data_config)
    model_config = _model_config(data, model_options, train_config, trainer_algorithm)
    # As the Trainer will, but before the run directory is made, so that a refusal leaves no run behind.
    require_training_step_memory(model_config, train_config.batch_size,
                                 trainer_algorithm.num_samples, torch_device, processes=group.world_size)
    with torch.device("meta"):   # on a model without memory: the check allocates nothing
        trainer_algorithm.check_engine(build_model(model_config), torch_device, distributed=group.distributed)
    train_config = fit_selection_to_budget(train_config, data.train.shape[0])
    loggers = _logger_names(loggers, tensorboard)
    check_loggers(loggers)   # before anything is written into the run directory
    out = Path(out)
    with contextlib.ExitStack() as held:
        if group.is_main:   # only rank 0 writes; the others learn whether it could
            try:
                # Locked before anything is removed: --overwrite must not pull a run from under
                # a process still training it.
                refuse_to_clobber(out, overwrite)   # before the lock file touches the directory
                held.enter_context(RunLock(create_run_dir(out)))
                out = prepare_run_dir(out, overwrite)
            except AevbError:
                group.all_agree(False, torch_device)
                raise
        if not group.all_agree(True, torch_device):
            raise AevbError(f"rank 0 could not prepare the run directory {out}")
        return _write_config_and_train(out, data, data_config, model_config, train_config, algorithm, group,
                                       torch_device, command, progress=progress, loggers=loggers,
                                       on_metrics=on_metrics,
                                       track_test=track_test, extra_metrics=extra_metrics,
                                       checkpoint_every=checkpoint_every, threads=threads,
                                       report_every=report_every)


def _write_config_and_train(out: Path, data: Dataset, data_config: DataConfig, model_config: ModelConfig,
                            train_config: TrainConfig, algorithm: str, group, torch_device: torch.device,
                            command: str | None, **training) -> Path:
    """Record the run's configuration in ``out``/config.json (rank 0), then train."""
    config = {
        "format_version": RUN_FORMAT_VERSION,
        "aevb_version": __version__,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command if command is not None else shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "data": stored_data_config(data_config) | {
            "name": data.name, "source": data.source, "pixel_divisor": data.pixel_divisor,
            "train_size": data.train.shape[0],
            "valid_size": data.valid.shape[0], "test_size": data.test.shape[0],
            FINGERPRINT: data_fingerprint(data)},   # resume refuses data that changed since
        "model": model_config.to_dict(),
        "training": train_config.to_dict(),
        "algorithm": algorithm,
        "device": str(torch_device),
        "threads": training.get("threads") or "adaptive",   # how many ran each step: summary.json
        "processes": group.world_size,
    }
    if group.is_main:
        atomic_write_json(out / CONFIG_FILE, config)
    return _train_into(out, data, model_config, train_config, algorithm, group, torch_device,
                       configuration=configuration_id(config), **training)


def resume_run(run_dir: str | os.PathLike, *, device: str = "auto", progress: bool = True,
               tensorboard: bool = False, loggers: tuple[str, ...] = (), checkpoint_every: int | None = None,
               on_metrics: Callable[[Metrics], None] | None = None,
               extra_metrics: Callable[[VAE, Dataset], dict] | None = None, track_test: bool = False,
               threads: int | None = None, report_every: float | None = None) -> Path:
    """Continue the run in ``run_dir`` from its newest checkpoint, with the settings in its
    config.json, to the end it was asked for. With the same device and a fixed number of
    ``threads`` (the run's and the resumed one's) the run ends with the parameters, bit for bit,
    that it would have had uninterrupted. ``loggers``, ``on_metrics``, ``threads`` and
    ``report_every`` as for :func:`train_run`."""
    from ..baselines import ALGORITHMS, make_algorithm

    check_loggers(_logger_names(loggers, tensorboard))
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
    torch_device = resolve_device(device)
    group = from_environment(torch_device)
    torch_device = local_device(torch_device, group)
    check_distributable(group, make_algorithm(algorithm, train_config), train_config.batch_size,
                        extra_metrics is not None, model_config.posterior)
    with contextlib.ExitStack() as held:
        if group.is_main:
            held.enter_context(RunLock(out))
        identity = configuration_id(config)
        # Killed before its first checkpoint: start again, which is the same run (it is seeded).
        state = load_checkpoint(out, configuration=identity) if has_checkpoint(out) else None
        samples = state.samples if state is not None else 0
        measured = metrics_lines(out) if group.is_main else []
        if state is None and measured:
            warnings.warn(f"{out} has {len(measured)} evaluation points but no checkpoint: it trains again from "
                          "the start (the same seeded run), and measures them again", TrainingWarning)
        data = load_data(data_config)
        check_same_data(data, config["data"], out, where)
        if state is not None:
            model = build_model(model_config)
            groups = make_algorithm(algorithm, train_config).parameter_groups(model, 0.0)
            group_sizes = [len(group["params"]) for group in groups] if groups is not None \
                else [len(list(model.parameters()))]
            check_checkpoint_fits(state, model, data.train.shape[0], out, train_config.optimizer, group_sizes)
        if group.is_main:   # metrics after the checkpoint are measured again
            kept = [line for number, line in enumerate(measured, 1)
                    if line_samples(line, f"{out / METRICS_FILE} line {number}") <= samples]
            atomic_write_bytes(out / METRICS_FILE, "".join(kept).encode())
        return _train_into(out, data, model_config, train_config, algorithm, group, torch_device,
                           progress=progress, loggers=_logger_names(loggers, tensorboard), on_metrics=on_metrics,
                           track_test=track_test,
                           extra_metrics=extra_metrics, checkpoint_every=checkpoint_every, resume=state,
                           configuration=identity, threads=threads, report_every=report_every)


def refuse_a_diverged_run(out: Path) -> None:
    """A one-line error for a run whose training gave up (its checkpoints would only diverge
    again), with the reason it gave then."""
    if not (out / DIVERGED_FILE).is_file():
        return
    reason = read_json(out / DIVERGED_FILE).get("error")   # (read_json: a JSON object, or one line)
    reason = reason if isinstance(reason, str) else "training diverged"
    raise TrainingDiverged(f"{out} is a diverged run: {reason}; resuming would only repeat it, so start a new run "
                           "with that change")


def resolved_config(data_config: DataConfig, model_options: dict, train_config: TrainConfig,
                    algorithm: str = "aevb", data: Dataset | None = None) -> dict:
    """The data, model, training and algorithm sections a run with these settings would write into
    its config.json (the model resolved against the data; the step-size selection fitted to the
    training set), checked as :func:`train_run` checks them; nothing is trained, written or
    downloaded (the data must be there already)."""
    from ..baselines import make_algorithm

    if data is None:
        try:
            data = load_data(dataclasses.replace(data_config, download=False))
        except AevbError as error:
            if not data_config.download:
                raise
            raise AevbError(f"{error} (resolving a configuration downloads nothing)") from None
    model_config = _model_config(data, model_options, train_config, make_algorithm(algorithm, train_config))
    return {"data": stored_data_config(data_config), "model": model_config.to_dict(),
            "training": fit_selection_to_budget(train_config, data.train.shape[0]).to_dict(), "algorithm": algorithm}


def _model_config(data: Dataset, model_options: dict, train_config: TrainConfig, algorithm) -> ModelConfig:
    """The model a new run of ``algorithm`` trains on ``data``, checked: the algorithm's own model
    options on top (full VB, App. F: a Gaussian posterior over the decoder's parameters), the models
    it can train, and the data against the model."""
    model_config = model_config_for(data, **{**model_options, **algorithm.model_options})
    check_buildable(model_config)   # family pair and memory: refused before a run directory is made
    algorithm.check_model(model_config)
    check_data_fits_model(data, model_config, train_config)
    return model_config


def run_configs(config: dict, where: str) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configurations of a run's config.json, checked with the rules of a
    new run (one-line errors naming ``where`` and the setting)."""
    for section in ("model", "training"):
        if section not in config:
            raise AevbError(f"{where} has no {section} section (a JSON object, as in a run's config.json)")
        if not isinstance(config.get(section), dict):
            raise AevbError(f"{where}: {section} must be a JSON object, got {config.get(section)!r}")
    model_config = ModelConfig.from_dict(config["model"], f"{where}: model")
    check_buildable(model_config, f"{where}: model")   # before a resumed run's files are touched
    return model_config, TrainConfig.from_dict(config["training"], f"{where}: training")


def _train_into(out: Path, data: Dataset, model_config: ModelConfig, train_config: TrainConfig, algorithm: str,
                group, torch_device: torch.device, *, progress: bool, loggers: tuple[str, ...], track_test: bool,
                on_metrics: Callable[[Metrics], None] | None,
                extra_metrics, checkpoint_every: int | None, resume=None, configuration: str | None = None,
                threads: int | None = None, report_every: float | None = None) -> Path:
    """Train (or continue training) in the prepared run directory ``out``, checkpointing as it goes
    (every ``checkpoint_every`` steps, default :data:`DEFAULT_CHECKPOINT_EVERY`, and at every
    evaluation point); then write the model, figures and summary."""
    from ..baselines import ALGORITHMS

    if checkpoint_every is None:
        checkpoint_every = DEFAULT_CHECKPOINT_EVERY

    data = data.to(torch_device)
    # Seeded: a run with `initialise` false trains from the weights built here (a resumed one
    # replaces them), and the same settings must give the same model.
    torch.manual_seed(train_config.seed)
    model = build_model(model_config).to(torch_device)
    # A conditional model's datapoints are rows [x, one-hot(y)]: labels travel with their images.
    train, valid, test = (model_inputs(getattr(data, split), getattr(data, f"{split}_labels"), model_config)
                          for split in ("train", "valid", "test"))
    trainer = Trainer(model, train, train_config, valid=valid if valid.shape[0] else None,
                      test=test if track_test else None, algorithm=ALGORITHMS[algorithm](train_config), group=group,
                      threads=threads, data_name=data.source)
    checkpoint = (lambda state: save_checkpoint(out, state, configuration=configuration)) if group.is_main else None
    with StopOnSignal() as signalled:
        stop = signalled if group.world_size == 1 else AgreedStop(signalled, group, torch_device)
        if not group.is_main:   # the other processes train in step with rank 0 and write nothing
            trainer.fit(progress=False, resume=resume, stop_requested=stop)
            group.all_agree(True, torch_device)   # wait for rank 0 to finish writing
            return out
        trackers = _open_loggers(loggers, out)
        started = time.perf_counter()
        with open_no_follow(out / METRICS_FILE, "a") as metrics_file:
            def record(metrics: Metrics) -> None:
                line = metrics.to_dict() | (extra_metrics(model, data) if extra_metrics is not None else {})
                try:
                    metrics_file.write(json.dumps(strict_json(line)) + "\n")
                    metrics_file.flush()
                    os.fsync(metrics_file.fileno())
                except OSError as error:   # a full disk names no file by itself
                    raise named_os_error(error, out / METRICS_FILE) from None
                for tracker in trackers:
                    tracker.log(metrics)
                if on_metrics is not None:
                    on_metrics(metrics)

            report = RunsProgress({out.name: train_config.total_samples(train.shape[0])}, out.parent)
            try:
                with report_periodically(report, lambda line: print(line, file=sys.stderr, flush=True), report_every):
                    result = trainer.fit(on_metrics=record, progress=progress, on_checkpoint=checkpoint,
                                         checkpoint_every=checkpoint_every, resume=resume, stop_requested=stop)
            except TrainingInterrupted as interrupted:
                interrupted.signal = signalled.received
                raise
            except TrainingDiverged as diverged:   # recorded, so that a resume says so instead of repeating it
                atomic_write_json(out / DIVERGED_FILE, {"error": str(diverged)})
                raise
            finally:
                for tracker in trackers:
                    tracker.close()
    save_model(model, out)
    write_figures(out, model, data, train_config.binarize, result.history)
    # summary.json comes last: it marks the run finished (resume refuses a finished run).
    atomic_write_json(out / SUMMARY_FILE, strict_json(_summary(result, trainer.algorithm, model,
                                                               time.perf_counter() - started)))
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)   # the run is complete: its model is the result
    group.all_agree(True, torch_device)
    return out


def _summary(result, algorithm, model: VAE, wall_seconds: float) -> dict:
    """summary.json's numbers: the chosen step size and the trials, the last evaluation point,
    the engine, and what the algorithm adds (full VB: its KL term and full bound)."""
    last = result.history[-1]
    return {
        "step_size": result.step_size,
        "step_size_trials": [dataclasses.asdict(t) for t in result.step_size_trials],
        "samples": last.samples, "epochs": last.epoch, "train_bound": last.train_bound,
        "valid_bound": last.valid_bound, "test_bound": last.test_bound, "training_seconds": last.seconds,
        "samples_per_second": last.samples_per_second,
        "engine": algorithm.engine_used,   # how gradients were computed
        "steps_by_threads": {str(count): steps for count, steps in result.steps_by_threads.items()},
        "wall_seconds": wall_seconds,
    } | algorithm.run_summary(model, last.train_bound)


def _logger_names(loggers, tensorboard: bool) -> tuple[str, ...]:
    """The trackers asked for (``tensorboard`` True is ``loggers=("tensorboard",)``), each once."""
    names = tuple(loggers) + (("tensorboard",) if tensorboard else ())
    return tuple(dict.fromkeys(names))


def _open_loggers(names: tuple[str, ...], out: Path) -> list:
    """The trackers of a run in ``out``, given its config.json."""
    if not names:
        return []
    config = read_run_config(out)
    return [LOGGERS[name](out, config) for name in names]
