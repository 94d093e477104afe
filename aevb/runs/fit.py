"""Training a run in its prepared directory: checkpoints as it goes, metrics as they are measured, then
the model, the figures and summary.json; new runs (:mod:`aevb.runs.train`) and resumed ones
(:mod:`aevb.runs.resume`) both end here."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from ..checkpoint import (
    atomic_write_json,
    named_os_error,
    open_no_follow,
    save_model,
    strict_json,
)
from ..data import Dataset
from ..errors import TrainingDiverged, TrainingInterrupted
from ..models.build import build_model
from ..models.conditional import model_inputs
from ..models.vae import VAE
from ..training import Metrics, Trainer, TrainingState, TrainingWarning
from ..training.checkpoints import keep_only_newest, save_checkpoint
from ..training.distributed import ProcessGroup, from_environment, local_device
from ..training.preflight import Preflight
from .best import is_new_best, save_best_model
from .layout import (
    DIVERGED_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    read_run_config,
)
from .loggers import LOGGERS
from .outputs import write_figures
from .process import AgreedStop, StopOnSignal
from .progress_report import RunsProgress, report_periodically
from .spec import RunOptions, resolve_device
from .tracker_images import TrackerImages


def device_and_group(device: str) -> tuple[torch.device, ProcessGroup]:
    """The device of this process, and its process group: several processes under torchrun, else one."""
    torch_device = resolve_device(device)
    group = from_environment(torch_device)
    return local_device(torch_device, group), group


def fit_into(
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
    point) and keeping the best model by validation bound (:mod:`aevb.runs.best`); then write the
    model, figures and summary, and keep only the final checkpoint (to extend the run from)."""
    data = data.to(torch_device)
    # Seeded: a run with `initialise` false trains from the weights built here (a resumed one
    # replaces them), and the same settings must give the same model.
    torch.manual_seed(plan.config.seed)
    model = build_model(plan.model_config).to(torch_device)
    trainer = _trainer(model, data, plan, options, group)

    def checkpoint(state: TrainingState) -> None:
        if is_new_best(state):  # (first: a run killed between the two measures this point again)
            save_best_model(out, model, state)
        save_checkpoint(out, state, configuration=configuration)

    with StopOnSignal() as signalled:
        stop = signalled if group.world_size == 1 else AgreedStop(signalled, group, torch_device)
        if not group.is_main:  # the other processes train in step with rank 0 and write nothing
            trainer.fit(progress=False, resume=resume, stop_requested=stop)
            group.all_agree(True, torch_device)  # wait for rank 0 to finish writing
            return out
        started = time.perf_counter()
        total = plan.config.total_samples(trainer.dataset_size)
        show_lines = report_periodically(
            RunsProgress({out.name: total}, out.parent),
            lambda line: print(line, file=sys.stderr, flush=True),
            options.report_every,
        )
        extra = (lambda: extra_metrics(model, data)) if extra_metrics is not None else dict
        images = TrackerImages.of_run(model, data, plan.config.binarize)
        with MetricsRecord(out, options.loggers, extra, on_metrics, images) as record, show_lines:
            try:
                result = trainer.fit(
                    on_metrics=record,
                    progress=options.progress,
                    on_checkpoint=checkpoint if group.is_main else None,
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
    save_model(model, out)
    write_figures(out, model, data, plan.config.binarize, result.history)
    # summary.json comes last: it marks the run finished (resume refuses a finished run).
    summary = _summary(result, trainer.algorithm, model, time.perf_counter() - started)
    atomic_write_json(out / SUMMARY_FILE, strict_json(summary))
    keep_only_newest(out)  # the run is complete: its final state stays, to extend it from
    group.all_agree(True, torch_device)
    return out


def _trainer(model: VAE, data: Dataset, plan: Preflight, options: RunOptions, group: ProcessGroup) -> Trainer:
    """The Trainer of ``model`` on ``data`` as ``plan`` checked it (so it checks nothing again)."""
    # A conditional model's datapoints are rows [x, one-hot(y)]: labels travel with their images.
    train, valid, test = (
        model_inputs(getattr(data, split), getattr(data, f"{split}_labels"), plan.model_config)
        for split in ("train", "valid", "test")
    )
    return Trainer(
        model,
        train,
        plan.config,
        valid=valid if valid.shape[0] else None,
        test=test if options.track_test else None,
        algorithm=plan.algorithm,
        group=group,
        threads=options.threads,
        data_name=data.source,
        preflight=plan,
    )


class MetricsRecord:
    """Where each evaluation point goes once measured: a line of ``out``/metrics.jsonl (with what
    ``extra()`` adds, on disk before the next step), every tracker named in ``loggers`` (with the
    grids ``images()`` draws, for those that take images), and ``on_metrics``. A context manager:
    the trackers are closed however training ends."""

    def __init__(
        self,
        out: Path,
        loggers: tuple[str, ...],
        extra: Callable[[], dict],
        on_metrics: Callable[[Metrics], None] | None,
        images: Callable[[], dict] | None = None,
    ):
        self.path, self.loggers, self.extra, self.on_metrics = out / METRICS_FILE, loggers, extra, on_metrics
        self.images = images
        self.trackers: list = []
        self.image_trackers: list = []

    def __enter__(self) -> MetricsRecord:
        self.trackers = _open_loggers(self.loggers, self.path.parent)
        self.file = open_no_follow(self.path, "a")
        self.image_trackers = [tracker for tracker in self.trackers if tracker.takes_images]
        if self.image_trackers and self.images is None:
            names = ", ".join(tracker.name for tracker in self.image_trackers)
            warnings.warn(
                f"no images for the trackers ({names}): the data are not images (no image_shape)", TrainingWarning
            )
        return self

    def __call__(self, metrics: Metrics) -> None:
        line = metrics.to_dict() | self.extra()
        try:
            self.file.write(json.dumps(strict_json(line)) + "\n")
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as error:  # a full disk names no file by itself
            raise named_os_error(error, self.path) from None
        for tracker in self.trackers:
            tracker.log(metrics)
        if self.image_trackers and self.images is not None:
            images = self.images()  # drawn once for all the trackers
            for tracker in self.image_trackers:
                tracker.log_images(images, metrics.samples)
        if self.on_metrics is not None:
            self.on_metrics(metrics)

    def __exit__(self, exc_type, *exc) -> None:
        try:
            for tracker in self.trackers:
                tracker.close(completed=exc_type is None)
        finally:
            self.file.close()


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
        "best_samples": result.best_samples,  # where the best model by validation bound was taken
        "best_valid_bound": result.best_valid_bound,
        "stopped_early_at": result.stopped_early_at,
        "stopped": f"early stopped at {result.stopped_early_at:,} samples"
        if result.stopped_early_at
        else f"at its budget of {last.samples:,} samples",
    } | algorithm.run_summary(model, last.train_bound)


def _open_loggers(names: tuple[str, ...], out: Path) -> list:
    """The trackers of a run in ``out``, given its config.json."""
    if not names:
        return []
    config = read_run_config(out)
    return [LOGGERS[name](out, config) for name in names]
