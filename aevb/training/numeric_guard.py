"""The trainer's numeric guard: what went bad in a stretch of training between evaluation points (a
non-finite bound or parameters, or most steps skipped for a non-finite loss or gradient), and what
then happens: a rollback to the last evaluation point that passed with half the step size, at most
:data:`MAX_ROLLBACKS` times, else :class:`~aevb.errors.TrainingDiverged`."""

from __future__ import annotations

import math
import warnings
from typing import Callable

import torch

from ..errors import TrainingDiverged
from .config import Metrics
from .reporting import TrainingWarning
from .state import DataOrder, Interval, TrainingState

MAX_ROLLBACKS = 3  # then give up: the step size has been halved three times


class SkippedSteps:
    """The steps of one interval that the algorithm skipped. An algorithm that
    ``reports_skipped_steps`` (``guarded``) returns a NaN bound sum for a step it skipped (a
    non-finite loss or gradient); the counts stay on the device, so that no step waits for them."""

    def __init__(self, guarded: bool, device: torch.device):
        self.guarded = guarded
        self._steps = torch.zeros((), device=device)
        self._samples = torch.zeros((), device=device)
        # On a CPU reading the value waits for nothing, and is cheaper than the tensor operations
        # that keep a GPU from waiting (a few per step, a measurable share of a small model's step).
        self._on_host = torch.device(device).type == "cpu"

    def count(self, bound_sum: torch.Tensor, batch_size: int) -> torch.Tensor:
        """``bound_sum``, a step's on ``batch_size`` points, with a skipped step counted and its NaN
        read as 0."""
        if not self.guarded:
            return bound_sum
        if self._on_host:
            if not math.isnan(bound_sum.item()):
                return bound_sum
            self._steps += 1
            self._samples += batch_size
            return torch.zeros_like(bound_sum)
        bad = torch.isnan(bound_sum)
        self._steps += bad
        self._samples += bad * batch_size
        return torch.where(bad, torch.zeros_like(bound_sum), bound_sum)

    def steps(self, sum_: Callable[[torch.Tensor], torch.Tensor]) -> int:
        """The steps skipped, on every process (``sum_``: the process group's sum)."""
        return int(sum_(self._steps).item()) if self.guarded else 0

    def samples(self) -> int:
        """This process's points in the steps it skipped."""
        return int(self._samples.item()) if self.guarded else 0


def interval_problem(metrics: Metrics, interval: Interval, model: torch.nn.Module, has_bound: bool) -> str | None:
    """What went bad in the interval that ended at ``metrics`` (a non-finite bound, or parameters
    for an algorithm without a bound, or most steps skipped), or None."""
    finite = math.isfinite(metrics.train_bound) if has_bound else _parameters_finite(model)
    if not finite:
        return f"bound {metrics.train_bound}" if has_bound else "non-finite parameters"
    if interval.skipped > interval.steps // 2:
        return f"{interval.skipped} of {interval.steps} steps had a non-finite loss or gradient"
    return None


def _parameters_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def roll_back(
    problem: str,
    good: TrainingState,
    state: TrainingState,
    metrics: Metrics,
    guarded: bool,
    restore: Callable[[TrainingState], tuple[TrainingState, torch.optim.Optimizer, DataOrder]],
) -> tuple[TrainingState, torch.optim.Optimizer, DataOrder]:
    """Continue from ``good`` (put back by ``restore``, the trainer's) with half the step size, or —
    for an algorithm whose steps are not ``guarded``, or after :data:`MAX_ROLLBACKS` — stop with
    TrainingDiverged. The half is of the last step size, not ``good``'s, so that every rollback
    halves it again. Each rollback is a :class:`TrainingWarning` whose place is the trainer's
    ``fit``: two calls up, so this is called by the loop that ``fit`` runs."""
    if not guarded or state.rollbacks >= MAX_ROLLBACKS:
        tried = f" (after {state.rollbacks} rollbacks halving the step size)" if state.rollbacks else ""
        raise TrainingDiverged(
            f"training diverged at {state.samples} samples ({problem}){tried}; try a smaller `step_size`"
        )
    step_size, rollbacks, skipped_steps = state.step_size / 2, state.rollbacks + 1, state.skipped_steps
    state, optimizer, order = restore(good)
    state.step_size = step_size
    for group in optimizer.param_groups:
        group["lr"] = state.step_size
    state.rollbacks, state.skipped_steps = rollbacks, skipped_steps
    warnings.warn(
        f"training went bad at {metrics.samples} samples ({problem}); rollback {state.rollbacks} "
        f"of at most {MAX_ROLLBACKS}: back to {state.samples} samples with step size "
        f"{state.step_size:g}, half the last",
        TrainingWarning,
        stacklevel=3,
    )
    return state, optimizer, order
