"""§5's choice of the global step size: "chosen from {0.01, 0.02, 0.1} based on performance on
the training set in the first few iterations".

Every candidate trains from the same start — the same weights, the same random stream, the same
first minibatches — for the same number of iterations, and the one with the highest mean
minibatch bound over its trial's last pass through the training set wins: the closest a trial
comes to "performance on the training set". The run then trains from the start at the winner's
step size, so a run that chose its step size is, bit for bit, the run that was given it; what the
selection costs is the candidates' trials.

How long a trial is decides what wins. The larger step can trail the smaller one for many passes
and overtake it later (MNIST Nz = 20 at aevb's defaults: 0.01 leads for the first ten passes, while
0.02 spends longer on the plateau where q(z|x) is the prior; docs/results.md). So "iterations" are read as
passes through the training set — the authors'-era replication of their code (y0ast,
``trainmnist.py``) names each pass an "Iteration" — and a trial is ``selection_epochs`` of them
(:data:`aevb.training.config.SELECTION_EPOCHS`), at least :data:`SELECTION_MIN_STEPS` minibatches, and at most
:data:`SELECTION_SHARE` of the run. A candidate that ends up below the untrained model stops at
once: it diverged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..errors import AevbError, TrainingInterrupted
from ..progress import progress_bar
from .config import StepSizeTrial, TrainConfig
from .state import DataOrder

#: Fewest minibatches in a trial: the authors' Adagrad moves nothing in its first 100 (its
#: warm-up), so a trial must hold as many again that do.
SELECTION_MIN_STEPS = 200
#: Largest share of a run's samples one trial may take (of a run too short for
#: ``selection_epochs`` passes): the selection then costs at most this share per candidate.
SELECTION_SHARE = 0.5
#: Iterations between the checks for a diverged candidate (each reads the bound on the host).
DIVERGENCE_CHECK_STEPS = 100


@dataclass
class StepSizeChoice:
    """The winning step size and every candidate's trial."""

    step_size: float
    trials: list[StepSizeTrial]


def steps_per_pass(config: TrainConfig, dataset_size: int) -> int:
    """Minibatches in one pass through ``dataset_size`` rows (the last one may be short)."""
    return math.ceil(dataset_size / config.minibatch_rows(dataset_size))


def _uncapped_steps(config: TrainConfig, dataset_size: int) -> int:
    """``selection_epochs`` passes, at least :data:`SELECTION_MIN_STEPS`: a trial of a long run."""
    steps = math.ceil(config.selection_epochs * dataset_size / config.minibatch_rows(dataset_size))
    return max(steps, SELECTION_MIN_STEPS)


def _share_steps(config: TrainConfig, dataset_size: int) -> int:
    """:data:`SELECTION_SHARE` of the run, in minibatches."""
    return int(SELECTION_SHARE * config.total_samples(dataset_size)) // config.minibatch_rows(dataset_size)


def _fitting_steps(config: TrainConfig, dataset_size: int) -> int:
    """The most minibatches a trial may take and still end before the run's total."""
    return (config.total_samples(dataset_size) - 1) // config.minibatch_rows(dataset_size)


def trial_steps(config: TrainConfig, dataset_size: int) -> int:
    """Minibatches per candidate: ``selection_steps`` where given, else ``selection_epochs`` passes
    through ``dataset_size`` rows, within [:data:`SELECTION_MIN_STEPS`, :data:`SELECTION_SHARE` of
    the run] (the share wins for a run too short for both)."""
    if config.selection_steps is not None:
        return config.selection_steps
    return max(1, min(_uncapped_steps(config, dataset_size), _share_steps(config, dataset_size)))


def selection_fits_any_budget(config: TrainConfig, dataset_size: int) -> bool:
    """Whether a fitted ``config``'s trials are the ones it would have at any larger budget: not
    shortened to fit its run, nor cut to :data:`SELECTION_SHARE` of it (a run extended to more
    samples is then the run at that budget)."""
    if config.step_size is not None:
        return True
    if config.selection_steps >= _fitting_steps(config, dataset_size):
        return False
    share = _share_steps(config, dataset_size)
    return not (config.selection_steps == share and share < _uncapped_steps(config, dataset_size))


def fit_to_budget(config: TrainConfig, dataset_size: int, algorithm) -> TrainConfig:
    """``config`` with its trials' length settled (``selection_steps``, :func:`trial_steps`); a
    one-line error where no selection fits.

    §5 picks the step size by the training bound: an algorithm without one (``has_bound`` False,
    Monte Carlo EM) needs ``step_size`` given. A trial never reaches the run's total (it is
    shortened to fit), and config.json records the steps it uses. Fitting a fitted config changes
    nothing, so a resumed run keeps its own.
    """
    if config.step_size is not None:
        return config
    if not algorithm.has_bound:
        raise AevbError(
            f"{type(algorithm).__name__} has no lower bound to choose a step size by; give one (`step_size`)"
        )
    fitting = _fitting_steps(config, dataset_size)
    if fitting < 1:
        raise AevbError(
            f"{config.total_samples(dataset_size):,} training samples are too few to choose the step size (one "
            f"minibatch is {config.minibatch_rows(dataset_size):,}); pass `step_size` or train on more samples"
        )
    return dataclasses.replace(config, selection_steps=min(trial_steps(config, dataset_size), fitting))


def select_step_size(
    model: torch.nn.Module,
    candidates: Sequence[float],
    steps: int,
    make_optimizer: Callable[[float], torch.optim.Optimizer],
    make_order: Callable[[], DataOrder],
    step: Callable[[torch.optim.Optimizer, torch.Tensor], torch.Tensor],
    reduce: Callable[[torch.Tensor], torch.Tensor] = lambda total: total,
    progress: bool = False,
    scored_steps: int | None = None,
    untrained_bound: float | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> StepSizeChoice:
    """Train ``model`` from its current state for ``steps`` iterations with each of
    ``candidates`` and keep the best (§5). The model, its weights and torch's random stream are left
    as they were: the run starts again from there at the winner's step size.

    Args:
        model: trained in place during the trials, then put back.
        candidates: global step sizes to try (§5: 0.01, 0.02, 0.1).
        steps: iterations per candidate.
        make_optimizer: a fresh optimiser over ``model``'s parameters at a step size.
        make_order: a fresh minibatch iterator (consumes the random stream like a new run).
        step: one iteration on a minibatch of row indices; returns the sum of the minibatch's
            bounds (nats, summed over this process's rows), NaN where it diverged.
        reduce: sums a tensor over the processes of a multi-process run (identity on one).
        progress: a bar over all candidates' iterations.
        scored_steps: the last iterations whose mean bound is the score (a pass through the
            training set); None or more than half the trial: its second half.
        untrained_bound: the untrained model's bound (nats per datapoint). A candidate whose last
            :data:`DIVERGENCE_CHECK_STEPS` iterations average below it by its own size again (or
            to a non-finite bound) has diverged: it stops there and scores −∞.
        stop_requested: checked after every iteration, as the run's own steps are: the trials
            (minutes of a long run) stop at once, with nothing to save, since a run that starts
            again repeats them exactly.

    Raises:
        AevbError: every candidate diverged.
        TrainingInterrupted: ``stop_requested()`` turned true (at 0 samples: no state to keep).
    """
    initial_model = {name: value.clone() for name, value in model.state_dict().items()}
    initial_rng = torch.get_rng_state()
    scored = steps - steps // 2 if scored_steps is None else max(1, min(scored_steps, steps - steps // 2))
    floor = -math.inf
    if untrained_bound is not None and math.isfinite(untrained_bound):
        floor = untrained_bound - max(abs(untrained_bound), 1.0)
    trials: list[StepSizeTrial] = []
    bar = progress_bar(
        steps * len(candidates),
        unit="step",
        leave=False,
        desc=f"choosing the step size of {len(candidates)} (§5)",
        enabled=progress,
    )
    try:
        for step_size in candidates:
            model.load_state_dict(initial_model)
            torch.set_rng_state(initial_rng)
            optimizer = make_optimizer(step_size)
            order = make_order()
            total, count = None, 0
            recent, recent_count = None, 0  # since the last divergence check
            diverged = False
            for iteration in range(steps):
                batch = order.next()
                bound_sum = step(optimizer, batch)
                bar.update()
                if stop_requested is not None and stop_requested():
                    raise TrainingInterrupted(0)
                if iteration >= steps - scored:
                    total = bound_sum if total is None else total + bound_sum
                    count += batch.shape[0]
                recent = bound_sum if recent is None else recent + bound_sum
                recent_count += batch.shape[0]
                if (iteration + 1) % DIVERGENCE_CHECK_STEPS == 0:
                    mean = reduce(recent).item() / recent_count
                    if not mean >= floor:  # (NaN too)
                        diverged = True
                        bar.update(steps - iteration - 1)
                        break
                    recent, recent_count = None, 0
            mean = reduce(total).item() / count if count and not diverged else -math.inf
            trials.append(StepSizeTrial(step_size, mean if math.isfinite(mean) else -math.inf))
    finally:
        bar.close()
        model.load_state_dict(initial_model)
        torch.set_rng_state(initial_rng)
    best = max(range(len(trials)), key=lambda i: trials[i].mean_bound)
    if not math.isfinite(trials[best].mean_bound):
        raise AevbError("training diverged for every candidate step size; pass a smaller `step_size`")
    return StepSizeChoice(trials[best].step_size, trials)
