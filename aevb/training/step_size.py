"""§5's choice of the global step size: "chosen from {0.01, 0.02, 0.1} based on performance on
the training set in the first few iterations".

Every candidate trains from the same start — the same weights, the same random stream, the same
first minibatches — for the same number of iterations, and the one with the highest mean
minibatch bound over the second half of its iterations wins (the first half mostly measures
the initialisation). The winner's iterations are not thrown away: the run continues from where it
stopped, so a run that chose its step size and one that was given the winner are one stream of
iterations apart only in what the losers cost.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..errors import AevbError
from ..progress import progress_bar
from .config import StepSizeTrial, TrainConfig
from .state import DataOrder


@dataclass
class StepSizeChoice:
    """The winning step size, every candidate's trial, and the winner's state after its trial:
    the run continues from there."""

    step_size: float
    trials: list[StepSizeTrial]
    model: dict  # the model's state dict after the winner's iterations
    optimizer: dict  # the optimiser's state dict, likewise
    rng: torch.Tensor  # torch's CPU generator state, likewise
    order: DataOrder  # the minibatch iterator, possibly mid-epoch
    samples: int  # datapoints the winner's iterations used


def fit_to_budget(config: TrainConfig, dataset_size: int, algorithm) -> TrainConfig:
    """``config`` with a step-size selection the run can hold; a one-line error where none can be.

    §5 picks the step size by the training bound: an algorithm without one (``has_bound`` False,
    Monte Carlo EM) needs ``step_size`` given. The selection's iterations count towards the run (the
    winner continues from them), so with ``selection_steps`` minibatches reaching the total the run
    would overshoot ``max_samples`` / ``epochs`` and have no evaluation point: the selection is
    shortened to fit (config.json records the steps actually used). Fitting a fitted config changes
    nothing, so a resumed run keeps its own.
    """
    if config.step_size is not None:
        return config
    if not algorithm.has_bound:
        raise AevbError(
            f"{type(algorithm).__name__} has no lower bound to choose a step size by; give one (`step_size`)"
        )
    total = config.total_samples(dataset_size)
    per_step = min(config.batch_size, dataset_size)
    fitting = (total - 1) // per_step
    if fitting < 1:
        raise AevbError(
            f"{total:,} training samples are too few to choose the step size (one minibatch is "
            f"{per_step:,}); pass `step_size` or train on more samples"
        )
    return dataclasses.replace(config, selection_steps=min(config.selection_steps, fitting))


def select_step_size(
    model: torch.nn.Module,
    candidates: Sequence[float],
    steps: int,
    make_optimizer: Callable[[float], torch.optim.Optimizer],
    make_order: Callable[[], DataOrder],
    step: Callable[[torch.optim.Optimizer, torch.Tensor], torch.Tensor],
    reduce: Callable[[torch.Tensor], torch.Tensor] = lambda total: total,
    progress: bool = False,
) -> StepSizeChoice:
    """Train ``model`` from its current state for ``steps`` iterations with each of
    ``candidates`` and keep the best (§5).

    Args:
        model: trained in place; left with the last candidate's weights (load the choice's).
        candidates: global step sizes to try (§5: 0.01, 0.02, 0.1).
        steps: iterations per candidate.
        make_optimizer: a fresh optimiser over ``model``'s parameters at a step size.
        make_order: a fresh minibatch iterator (consumes the random stream like a new run).
        step: one iteration on a minibatch of row indices; returns the sum of the minibatch's
            bounds (nats, summed over this process's rows), NaN where it diverged.
        reduce: sums a tensor over the processes of a multi-process run (identity on one).
        progress: a bar over all candidates' iterations.

    Raises:
        AevbError: every candidate diverged.
    """
    initial_model = copy.deepcopy(model.state_dict())
    initial_rng = torch.get_rng_state()
    trials: list[StepSizeTrial] = []
    ends = []  # each candidate's state after its trial
    bar = progress_bar(
        steps * len(candidates),
        unit="step",
        leave=False,
        desc=f"choosing the step size of {len(candidates)} (§5)",
        enabled=progress,
    )
    for step_size in candidates:
        model.load_state_dict(initial_model)
        torch.set_rng_state(initial_rng)
        optimizer = make_optimizer(step_size)
        order = make_order()
        total, count, seen = None, 0, 0
        for iteration in range(steps):
            batch = order.next()
            seen += batch.shape[0]
            bound_sum = step(optimizer, batch)
            bar.update()
            if iteration >= steps // 2:
                total = bound_sum if total is None else total + bound_sum
                count += batch.shape[0]
        mean = reduce(total).item() / count if count else -math.inf
        trials.append(StepSizeTrial(step_size, mean if math.isfinite(mean) else -math.inf))
        ends.append(
            (
                copy.deepcopy(model.state_dict()),
                copy.deepcopy(optimizer.state_dict()),
                torch.get_rng_state(),
                order,
                seen,
            )
        )
    bar.close()
    best = max(range(len(trials)), key=lambda i: trials[i].mean_bound)
    if not math.isfinite(trials[best].mean_bound):
        raise AevbError("training diverged for every candidate step size; pass a smaller `step_size`")
    return StepSizeChoice(trials[best].step_size, trials, *ends[best])
