"""Extending a run to a larger budget (``aevb train --resume RUN --max-samples N``), finished or
not: it continues from its newest checkpoint (a finished run keeps its final one) and ends as the
run that was asked for N samples from the start would, where the way it trains does not depend on
its budget. Evaluation points do not draw from the training's random stream (the evaluator forks
it), so the extended run's extra point at the old budget changes nothing of its training; its
metrics.jsonl has that point besides those of the run at N. The cases where the budget shaped the
run are refused, each in one line naming its setting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import AevbError
from ..training import TrainConfig, TrainingState
from ..training.optimizers import SCHEDULES
from ..training.step_size import selection_fits_any_budget


def extended_config(
    config: TrainConfig, max_samples: int, dataset_size: int, state: TrainingState | None, out: Path
) -> TrainConfig:
    """``config`` (the run's, as its config.json has it) with the budget ``max_samples``; a one-line
    error, naming the setting, where that would not be the run at ``max_samples``: a budget that
    is no larger, an ``epochs`` limit that stops it first, a schedule stretched over the budget, a
    step-size selection the budget shortened, a last partial minibatch, a run stopped early."""
    total = config.total_samples(dataset_size)
    if state is not None and state.stopped_early:
        raise AevbError(
            f"{out} stopped early at {state.samples:,} samples (no higher validation bound in "
            f"{config.early_stopping} evaluation points, `early_stopping`): more samples would continue "
            "a run that stopped improving; start a new run without `early_stopping`, or with a larger one, to train on"
        )
    if max_samples <= total:
        raise AevbError(
            f"`max_samples` {max_samples:,} does not extend {out}: it trains to {total:,} samples already; ask for more"
        )
    extended = dataclasses.replace(config, max_samples=max_samples)
    if extended.total_samples(dataset_size) < max_samples:
        raise AevbError(
            f"{out} stops after `epochs` {config.epochs:g} ({extended.total_samples(dataset_size):,} samples), "
            f"before `max_samples` {max_samples:,}: start a new run to train longer"
        )
    if SCHEDULES[config.schedule].depends_on_budget:
        raise AevbError(
            f"`schedule` {config.schedule!r} is stretched over the run's budget: {out} extended would not be "
            "the run at the larger budget; start a new run"
        )
    if not selection_fits_any_budget(config, dataset_size):
        raise AevbError(
            f"{out} chose its step size in `selection_steps` {config.selection_steps}, shortened to fit its "
            f"budget of {total:,} samples: extended, it would not be the run at the larger budget; start a new run"
        )
    # Shuffled minibatches of `batch_size` rows run through each epoch's permutation, the last one of
    # an epoch shorter; drawn with replacement, every one is whole (min(batch_size, rows)). The budget
    # fell between two of them when the rows into its epoch (or all its rows) are no whole number.
    per_step = config.minibatch_rows(dataset_size)
    into = total if config.minibatches == "with-replacement" else total % dataset_size
    if state is not None and state.samples == total and into % per_step:
        raise AevbError(
            f"{out} ended on a minibatch cut short to stop at {total:,} samples (no whole number of "
            f"`batch_size` {config.batch_size} minibatches): extended, it would not be the run at the larger "
            "budget; start a new run"
        )
    return extended
