"""What a training run measures of its model: the untrained model's bound (the floor a run must beat)
and, at each evaluation point (:func:`~aevb.training.config.evaluation_points`), the training,
validation and test bounds that make its :class:`~aevb.training.config.Metrics`."""

from __future__ import annotations

import math

import torch

from ..data.sources import StreamedRows, is_streamed
from ..evaluation import evaluate_bound
from ..objectives.estimators import bound_estimator
from ..threads import StepThreads
from .config import Metrics, TrainConfig
from .state import TrainingState

#: Training points on which the untrained model's bound is measured: enough to tell a run that
#: learned from one that made its model worse (a bound tens of nats lower), cheap to evaluate.
INITIAL_BOUND_POINTS = 1000

EVALUATION_BINARIZATION_SEED = 1234


def evaluation_data(data: torch.Tensor | StreamedRows, binarize: str) -> torch.Tensor | StreamedRows:
    """The data a model trained with ``binarize`` is scored on.

    With dynamic binarisation the model is scored on one fixed Bernoulli draw of each image
    (seeded with a constant), so every evaluation point, ``aevb evaluate`` and every run see the
    same binary images.
    """
    if binarize != "dynamic":
        return data
    if is_streamed(data):  # (read a slice at a time: each slice's draw is seeded by where it starts)
        return data.binarized(EVALUATION_BINARIZATION_SEED)
    generator = torch.Generator(device="cpu").manual_seed(EVALUATION_BINARIZATION_SEED)
    return torch.bernoulli(data.cpu(), generator=generator).to(data.device)


class Evaluator:
    """The bounds of a model in training, with ``config``'s estimator and evaluation batch size, on
    the data as it is scored (:func:`evaluation_data`, the first
    ``config.eval_subset`` rows), each at the evaluation thread count of ``threads``.

    Args:
        model: the model in training; it is back in training mode after each measurement.
        config: the run's settings.
        threads: the trainer's thread policy.
        has_bound: whether the algorithm trains an encoder; without one, the bounds are NaN (its
            bound would be meaningless) and there is no initial bound.
        train, valid, test: the run's splits (valid and test optional), as the trainer has them.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainConfig,
        threads: StepThreads,
        has_bound: bool,
        train: torch.Tensor,
        valid: torch.Tensor | None = None,
        test: torch.Tensor | None = None,
    ):
        self.model, self.config, self.threads, self.has_bound = model, config, threads, has_bound
        self.dataset_size = train.shape[0]
        self.train = self._scored(train)
        self.valid = None if valid is None else self._scored(valid)
        self.test = None if test is None else self._scored(test)

    def _scored(self, data: torch.Tensor) -> torch.Tensor:
        if self.config.eval_subset is not None:
            data = data[: self.config.eval_subset]
        return evaluation_data(data, self.config.binarize)

    def _forked_generators(self):
        """torch's generators forked: what an evaluation draws is not drawn from the training's
        random stream, so where a run is evaluated (its budget's last point, ``evals_per_decade``)
        does not change how it trains, and a run extended to a larger budget is the run at that budget."""
        devices = [self.train.device] if self.train.device.type == "cuda" else []
        return torch.random.fork_rng(devices=devices)

    def initial_bound(self) -> float | None:
        """The untrained model's bound on the first training points (nats per datapoint), drawn
        from a forked generator so that the run's random stream is the one it would have without."""
        if not self.has_bound:
            return None
        with self._forked_generators(), self.threads.for_evaluation():
            return evaluate_bound(
                self.model,
                self.train[:INITIAL_BOUND_POINTS],
                estimator=bound_estimator(self.config.estimator),
                batch_size=self.config.eval_batch_size,
            ).mean

    def metrics(self, samples: int, steps: int, step_size: float, seconds: float, minibatch_bound: float) -> Metrics:
        """The evaluation point after ``samples`` training samples in ``steps`` steps and ``seconds``
        of training, at ``step_size``, with the ``minibatch_bound`` averaged since the last one."""
        batch, estimator = self.config.eval_batch_size, bound_estimator(self.config.estimator)

        def bound(data: torch.Tensor | None) -> float | None:
            if data is None:
                return None
            if not self.has_bound:  # no trained encoder: its bound would be meaningless
                return math.nan
            return evaluate_bound(self.model, data, estimator=estimator, batch_size=batch).mean

        with self._forked_generators(), self.threads.for_evaluation():
            train_bound, valid_bound, test_bound = [bound(data) for data in (self.train, self.valid, self.test)]
        self.model.train()
        return Metrics(
            epoch=samples / self.dataset_size,
            samples=samples,
            train_bound=train_bound,
            valid_bound=valid_bound,
            minibatch_bound=minibatch_bound,
            seconds=seconds,
            samples_per_second=samples / max(seconds, 1e-9),
            step_size=step_size,
            steps=steps,
            test_bound=test_bound,
        )


def evaluation_point_passed(target: int, state: TrainingState) -> bool:
    """Whether the evaluation point at ``target`` samples is behind the run: trained past, or
    reached and evaluated. A run stopped on the very step that reached a point, or whose step-size
    selection (§5) used the whole budget, has reached it without evaluating it: it is evaluated
    then, before any further step (so a resumed run stays the uninterrupted one)."""
    if target != state.samples:
        return target < state.samples
    return bool(state.history) and state.history[-1].samples == target
