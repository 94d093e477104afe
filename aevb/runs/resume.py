"""Resuming a run from its newest checkpoint, with the settings in its config.json."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Callable

from ..checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    read_json,
)
from ..data import Dataset
from ..errors import AevbError, TrainingDiverged
from ..models.build import build_model
from ..models.vae import VAE, ModelConfig
from ..training import Metrics, TrainConfig, TrainingState
from ..training.algorithms import ALGORITHMS, make_algorithm
from ..training.checkpoint_checks import check_checkpoint_fits
from ..training.checkpoints import has_checkpoint, load_checkpoint
from ..training.preflight import Preflight, run_preflight
from ..training.reporting import TrainingWarning
from ..training.trainer import TrainingData
from .data_config import (
    check_same_data,
    data_config_of_run,
    given_data,
    load_data,
)
from .extend import extended_config
from .fit import device_and_group, fit_into
from .layout import (
    CONFIG_FILE,
    DIVERGED_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    configuration_id,
    configuration_ids,
    line_samples,
    metrics_lines,
    read_run_config,
    refuse_links,
)
from .lock import RunLock
from .spec import RunOptions


def resume_run(
    run_dir: str | os.PathLike,
    options: RunOptions | None = None,
    *,
    max_samples: int | None = None,
    on_metrics: Callable[[Metrics], None] | None = None,
    extra_metrics: Callable[[VAE, Dataset], dict] | None = None,
    data: Dataset | TrainingData | None = None,
) -> Path:
    """Continue the run in ``run_dir`` from its newest checkpoint, with the settings in its
    config.json, to the end it was asked for; ``options`` say how it runs now (default: the
    defaults of :class:`RunOptions`). With the same device the run ends with the parameters, bit
    for bit, that it would have had uninterrupted. ``max_samples`` larger than the run's budget
    extends it, finished or not (:mod:`aevb.runs.extend`: it ends as the run at that budget would,
    or is refused in one line naming the setting that prevents it). ``on_metrics`` and
    ``extra_metrics`` as for :func:`train_run`; ``data``: the data a run trained on when they were
    given to :func:`train_run` in memory (checked against the run's fingerprint)."""
    options = options if options is not None else RunOptions()
    options.check_loggers_installed()
    out = Path(run_dir)
    config = read_run_config(out)
    finished = (out / SUMMARY_FILE).exists()
    if finished and max_samples is None:
        raise AevbError(f"{out} is a finished run; nothing to resume (a larger `max_samples` extends it)")
    if finished and not has_checkpoint(out):
        raise AevbError(f"{out} finished without keeping its final checkpoint (an earlier aevb): it cannot be extended")
    refuse_links(out)
    refuse_a_diverged_run(out)
    where = str(out / CONFIG_FILE)
    algorithm = config.get("algorithm")
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise AevbError(f"{where} names an unknown algorithm {algorithm!r}")
    given = given_data(config.get("data"), data, out, where)
    data_config = data_config_of_run(config.get("data"), where=where) if given is None else None
    model_config, train_config = run_configs(config, where)
    torch_device, group = device_and_group(options.device)
    with contextlib.ExitStack() as held:
        if group.is_main:
            held.enter_context(RunLock(out))
        # Killed before its first checkpoint: start again, which is the same run (it is seeded).
        state = load_checkpoint(out, configuration=configuration_ids(config)) if has_checkpoint(out) else None
        samples = state.samples if state is not None else 0
        measured = metrics_lines(out) if group.is_main else []
        if state is None and measured:
            warnings.warn(
                f"{out} has {len(measured)} evaluation points but no checkpoint: it trains again from "
                "the start (the same seeded run), and measures them again",
                TrainingWarning,
            )
        data = given if given is not None else load_data(data_config)
        check_same_data(data, config["data"], out, where)
        if max_samples is not None:
            train_config = extended_config(train_config, max_samples, data.train.shape[0], state, out)
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
            _check_fits(state, plan, out)
            _check_within_budget(state, plan, out)
        if max_samples is not None:
            config = {**config, "training": {**config["training"], "max_samples": max_samples}}
            group.all_agree(True, torch_device)  # every process has read the run as it was
            if group.is_main:  # unfinished first: killed before the new config.json, it resumes as it was
                (out / SUMMARY_FILE).unlink(missing_ok=True)
                atomic_write_json(out / CONFIG_FILE, config)
        if group.is_main:  # metrics after the checkpoint are measured again
            _keep_metrics_up_to(out, measured, samples)
        return fit_into(
            out,
            data,
            plan,
            options,
            group,
            torch_device,
            on_metrics=on_metrics,
            extra_metrics=extra_metrics,
            resume=state,
            configuration=configuration_id(config),
        )


def _check_fits(state: TrainingState, plan: Preflight, out: Path) -> None:
    """A one-line error unless the checkpoint ``state`` fits the model, data and optimiser that
    ``plan`` checked (a checkpoint copied from another run, or edited by hand)."""
    model = build_model(plan.model_config)
    groups = plan.algorithm.parameter_groups(model, 0.0)
    group_sizes = [len(group["params"]) for group in groups] if groups is not None else [len(list(model.parameters()))]
    check_checkpoint_fits(state, model, plan.dataset_size, out, plan.config.optimizer, group_sizes)


def _check_within_budget(state: TrainingState, plan: Preflight, out: Path) -> None:
    """A one-line error for a checkpoint past the run's budget (its config.json's budget lowered by hand)."""
    total = plan.config.total_samples(plan.dataset_size)
    if state.samples > total:
        raise AevbError(
            f"{out}'s newest checkpoint is at {state.samples:,} samples, past its budget of {total:,} "
            "(`max_samples`, `epochs` in its config.json): a run is not shortened; start a new one"
        )


def _keep_metrics_up_to(out: Path, measured: list[str], samples: int) -> None:
    """metrics.jsonl with the lines ``measured`` up to the checkpoint at ``samples`` only: the
    resumed run measures the later evaluation points again."""
    kept = [
        line
        for number, line in enumerate(measured, 1)
        if line_samples(line, f"{out / METRICS_FILE} line {number}") <= samples
    ]
    atomic_write_bytes(out / METRICS_FILE, "".join(kept).encode())


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
        TrainConfig.from_run(config["training"], f"{where}: training"),
    )
