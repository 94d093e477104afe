"""What a training run is at a step boundary: its data order and its whole state, which a
checkpoint holds (:mod:`aevb.training.checkpoints`) and :meth:`aevb.training.Trainer.fit` resumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .config import Metrics, StepSizeTrial


class DataOrder:
    """Endless random minibatches of training-row indices (the same on every process: identically
    seeded generators). With ``replacement``, each minibatch is ``batch_size`` rows drawn
    independently, with replacement (the authors' code); else an epoch is one pass through a fresh
    permutation, its last minibatch shorter where ``batch_size`` does not divide the rows. Its whole
    state is the permutation and a position (none with replacement: the random stream is), so a
    checkpoint can hold it and a resumed run continue mid-epoch."""

    def __init__(self, dataset_size: int, batch_size: int, device: torch.device, replacement: bool = False):
        self.dataset_size, self.batch_size, self.device = dataset_size, batch_size, device
        self.replacement = replacement
        self.order: torch.Tensor | None = None
        self.position = dataset_size

    def next(self) -> torch.Tensor:
        if self.replacement:
            return torch.randint(self.dataset_size, (min(self.batch_size, self.dataset_size),), device=self.device)
        if self.order is None or self.position >= self.dataset_size:
            self.order = torch.randperm(self.dataset_size, device=self.device)
            self.position = 0
        batch = self.order[self.position : self.position + self.batch_size]
        self.position += batch.shape[0]
        return batch


@dataclass
class TrainingState:
    """Everything a run needs to continue exactly where it was (at a step boundary): written as a
    checkpoint, handed back to :meth:`Trainer.fit` as ``resume``."""

    samples: int
    steps: int
    step_size: float
    trials: list[StepSizeTrial]
    history: list[Metrics]
    training_seconds: float
    running_sum: torch.Tensor  # minibatch bound summed since the last evaluation point
    running_count: int
    model: dict[str, torch.Tensor]
    optimizer: dict
    rng: torch.Tensor  # torch.get_rng_state()
    order: torch.Tensor | None  # the epoch's permutation, and where in it we are
    position: int
    algorithm: dict = field(default_factory=dict)  # the algorithm's own state (MCEM's chains), if any
    skipped_steps: int = 0
    rollbacks: int = 0
    initial_bound: float | None = None  # of the untrained model, on a few training points: the floor a run must beat
    # The highest validation bound at an evaluation point so far, where it was measured, and the evaluation points
    # since without a higher one (what `early_stopping` counts); stopped_early: the run ended by that rule.
    best_valid_bound: float | None = None
    best_samples: int | None = None
    evaluations_since_best: int = 0
    stopped_early: bool = False


@dataclass
class Interval:
    """The callbacks of one stretch of training between evaluation points, and what it counted."""

    bar: object
    on_checkpoint: Callable | None
    checkpoint_every: int | None
    stop_requested: Callable[[], bool] | None
    first_step: int = 0
    steps: int = 0
    skipped: int = 0
