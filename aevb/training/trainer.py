"""The trainer: minibatches, the step-size selection of §5, evaluation points, checkpoints and the
numeric guard (skipped steps, rollbacks with half the step size)."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from typing import Callable

import torch

from ..errors import AevbError, TrainingDiverged, TrainingInterrupted
from ..evaluation import evaluate_bound
from ..models.config import ModelConfig
from ..models.vae import VAE
from ..objectives.estimators import bound_estimator
from ..threads import StepThreads
from ..validation import require_rows
from .algorithm import AEVB, Algorithm
from .config import Metrics, StepSizeTrial, TrainConfig, TrainResult, evaluation_data, evaluation_points
from .distributed import SINGLE_PROCESS, ProcessGroup, Shard
from .optimizers import OPTIMIZERS, SCHEDULES
from .preflight import Preflight, run_preflight
from .reporting import TrainingWarning, refuse_untrainable, training_bar, warn_if_worse_than_untrained
from .state import DataOrder, Interval, TrainingState
from .step_size import StepSizeChoice, select_step_size

MAX_ROLLBACKS = 3  # then give up: the step size has been halved three times


#: Training points on which the untrained model's bound is measured: enough to tell a run that
#: learned from one that made its model worse (a bound tens of nats lower), cheap to evaluate.
INITIAL_BOUND_POINTS = 1000


class Trainer:
    """Runs Algorithm 1 (or another :class:`Algorithm`) on a model and a training set in memory.

    Args:
        model: the VAE, or any ``nn.Module`` with ``encode(x)`` → q(z|x), ``decode(z)`` → p(x|z) and
            ``prior()`` → p(z) (``torch.distributions``; see :mod:`aevb.objectives.estimators`). A
            fresh run re-initialises it (§5) through its ``reset_parameters`` when it has one and
            ``config.initialise`` is true; otherwise it trains from the weights it has.
        train: (N, D) training data, on the device to train on.
        config: the settings.
        valid: optional (N_valid, D) validation data, evaluated at each evaluation point.
        test: optional (N_test, D) test data, likewise — for reproducing the paper's train/test
            curves; leave it out when choosing settings, which is what the validation set is for.
        algorithm: what one iteration does; default AEVB with ``config``'s estimator and L.
        group: this process's place in multi-process training (:mod:`aevb.training.distributed`); each
            process is given the whole training set and reads only its shard of every minibatch.
        threads: CPU threads per step. None (the default) adapts: the count up to torch's current
            one that steps fastest, measured again as the machine's load changes
            (:mod:`aevb.threads`; several processes on one machine each keep their share).
            A number fixes it, for runs that repeat bit for bit.
        data_name: where ``train`` came from (a file), named in the message about data that
            cannot be trained on.
        preflight: what :func:`aevb.training.preflight.run_preflight` found for this very run (a
            run directory checks before it writes anything); None: the Trainer runs it now.
    """

    def __init__(
        self,
        model: VAE,
        train: torch.Tensor,
        config: TrainConfig,
        valid: torch.Tensor | None = None,
        algorithm: Algorithm | None = None,
        test: torch.Tensor | None = None,
        group: ProcessGroup = SINGLE_PROCESS,
        threads: int | None = None,
        data_name: str | None = None,
        preflight: Preflight | None = None,
    ):
        self.data_name = data_name
        splits = {
            f"`{name}`": data for name, data in (("train", train), ("valid", valid), ("test", test)) if data is not None
        }
        for name, data in splits.items():
            require_rows(data, model, name.strip("`"))
        if algorithm is not None and not isinstance(algorithm, Algorithm):
            raise AevbError(f"`algorithm` must be an aevb.training.Algorithm, got {type(algorithm).__name__}")
        self.algorithm = algorithm if algorithm is not None else AEVB.from_config(config)
        model_config = model.config if isinstance(getattr(model, "config", None), ModelConfig) else None
        if preflight is None:
            preflight = run_preflight(
                model_config, config, self.algorithm, train.device, train.shape[0], group, model=model, splits=splits
            )
        else:
            preflight.check_covers(model_config, self.algorithm, train.device, group, train.shape[0])
        self.group = group
        self.threads = StepThreads.for_device(threads, train.device, group.local_world_size if group.distributed else 1)
        self.model = model
        self.train_data = train
        self.config = preflight.config  # (the step-size selection fitted to the budget)
        self.dataset_size = train.shape[0]
        self.has_bound = self.algorithm.has_bound
        self.train_eval = self._eval_view(train)
        self.valid_eval = None if valid is None else self._eval_view(valid)
        self.test_eval = None if test is None else self._eval_view(test)

    def _eval_view(self, data: torch.Tensor) -> torch.Tensor:
        if self.config.eval_subset is not None:
            data = data[: self.config.eval_subset]
        return evaluation_data(data, self.config.binarize)

    def _optimizer(self, step_size: float) -> torch.optim.Optimizer:
        weight_decay = self.config.prior_precision / self.dataset_size
        # An algorithm may group the parameters (full VB: no weight decay where a KL term is the prior).
        groups = self.algorithm.parameter_groups(self.model, weight_decay)
        parameters = self.model.parameters() if groups is None else groups
        eps = {} if self.config.optimizer_eps is None else {"eps": self.config.optimizer_eps}
        return OPTIMIZERS[self.config.optimizer](parameters, lr=step_size, weight_decay=weight_decay, **eps)

    def _data_order(self) -> DataOrder:
        return DataOrder(self.dataset_size, self.config.batch_size, self.train_data.device)

    def _load(self, batch: torch.Tensor, rows: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's shard of minibatch ``batch`` (all of it on one process): its indices and
        data rows, freshly binarised with dynamic binarisation. The binarisation noise is drawn
        for the whole minibatch, so that every process's draws match a one-process run."""
        rows = self.group.shard(batch.shape[0]) if rows is None else rows
        indices = batch[rows]
        x = torch.index_select(self.train_data, 0, indices)  # a row copy each; [indices] is slower
        if self.config.binarize == "dynamic":
            uniform = torch.rand(batch.shape[0], x.shape[1], device=x.device, dtype=x.dtype)[rows]
            x = (uniform < x).to(x.dtype)
        return indices, x

    def _step(self, optimizer: torch.optim.Optimizer, batch: torch.Tensor) -> torch.Tensor:
        """One iteration on minibatch ``batch``, at the thread policy's count; returns the bound
        sum over this process's shard."""
        return self.threads.run(lambda: self._iteration(optimizer, batch), batch.shape[0])

    def _iteration(self, optimizer: torch.optim.Optimizer, batch: torch.Tensor) -> torch.Tensor:
        rows = self.group.shard(batch.shape[0])
        indices, x = self._load(batch, rows)
        if self.group.distributed:
            return self.algorithm.step(self.model, optimizer, x, indices, shard=Shard(rows, batch.shape[0], self.group))
        return self.algorithm.step(self.model, optimizer, x, indices)

    def select_step_size(self, progress: bool = False) -> StepSizeChoice:
        """§5: the step size from ``config.step_size_candidates`` whose first ``selection_steps``
        iterations reach the highest training bound (:func:`aevb.training.step_size.select_step_size`),
        with the winner's state to continue from. ``progress``: a bar over the candidates' steps."""
        return select_step_size(
            self.model,
            self.config.step_size_candidates,
            self.config.selection_steps,
            self._optimizer,
            self._data_order,
            self._step,
            self.group.sum_,
            progress,
        )

    def fit(
        self,
        on_metrics: Callable[[Metrics], None] | None = None,
        progress: bool = False,
        on_checkpoint: Callable[[TrainingState], None] | None = None,
        checkpoint_every: int | None = None,
        resume: TrainingState | None = None,
        stop_requested: Callable[[], bool] | None = None,
    ) -> TrainResult:
        """Train until the configured number of samples; evaluate at log-spaced points.

        ``on_metrics`` is called with each :class:`Metrics` as soon as it is measured (the run
        directory writes it to ``metrics.jsonl`` there and then). ``on_checkpoint`` is called with
        the :class:`TrainingState` after every ``checkpoint_every`` steps and after every
        evaluation point (its tensors are the live ones: write them before returning). ``resume``
        continues from such a state; the run then ends with the parameters, bit for bit, of a run
        that was never interrupted (on the same device, with a fixed ``threads`` count). When
        ``stop_requested()`` turns true (checked after every step), the state goes to
        ``on_checkpoint`` and :class:`~aevb.errors.TrainingInterrupted` is raised.
        """
        self.threads.start()
        try:
            return self._fit(on_metrics, progress, on_checkpoint, checkpoint_every, resume, stop_requested)
        finally:
            self.threads.stop()
            self.algorithm.teardown()

    def _setup_algorithm(self) -> None:
        with self.threads.at_most():  # per-thread buffers for every count the policy may choose
            self.algorithm.setup(self.model, self.train_data, self.group)
        # Threads may change between steps only where that changes no bit of the run.
        self.threads.adapt_only_if(self.algorithm.steps_thread_count_invariant)

    def _start(self, progress: bool = False) -> tuple[TrainingState, torch.optim.Optimizer, DataOrder]:
        """A fresh run: seed, initialise (§5), choose the step size (§5) unless given."""
        config = self.config
        torch.manual_seed(config.seed)
        # A module of the user's own may have no reset_parameters: it starts from its weights.
        reset = getattr(self.model, "reset_parameters", None) if config.initialise else None
        if reset is not None:
            reset()
            initialise_from_data = getattr(self.model, "initialise_from_data", None)
            if initialise_from_data is not None:
                initialise_from_data(self.train_data)
        self.model.train()
        self._setup_algorithm()
        initial_bound = self._initial_bound()
        refuse_untrainable(initial_bound, self.model, self.train_data, self.data_name)
        started = time.perf_counter()
        samples = steps = 0
        trials: list[StepSizeTrial] = []
        if config.step_size is None:
            choice = self.select_step_size(progress)
            step_size, trials = choice.step_size, choice.trials
            self.model.load_state_dict(choice.model)
            optimizer = self._optimizer(step_size)
            optimizer.load_state_dict(choice.optimizer)
            torch.set_rng_state(choice.rng)
            # The winner's iterations are part of this run: continue its data order and counts.
            order = choice.order
            steps = config.selection_steps
            samples = choice.samples
        else:
            step_size = config.step_size
            optimizer = self._optimizer(step_size)
            order = self._data_order()
        state = TrainingState(
            samples=samples,
            steps=steps,
            step_size=step_size,
            trials=trials,
            history=[],
            training_seconds=time.perf_counter() - started,
            running_sum=torch.zeros((), device=self.train_data.device),
            running_count=0,
            model={},
            optimizer={},
            rng=torch.empty(0),
            order=None,
            position=0,
            initial_bound=initial_bound,
        )
        return state, optimizer, order

    def _initial_bound(self) -> float | None:
        """The untrained model's bound on the first training points (nats per datapoint), drawn
        from a forked generator so that the run's random stream is the one it would have without."""
        if not self.has_bound:
            return None
        devices = [self.train_data.device] if self.train_data.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), self.threads.for_evaluation():
            return evaluate_bound(
                self.model,
                self.train_eval[:INITIAL_BOUND_POINTS],
                estimator=bound_estimator(self.config.estimator),
                batch_size=self.config.eval_batch_size,
            ).mean

    def _restore(self, resume: TrainingState) -> tuple[TrainingState, torch.optim.Optimizer, DataOrder]:
        """Put model, optimiser, algorithm, generator and data order back as ``resume`` has them."""
        self.model.train()
        self._setup_algorithm()
        self.model.load_state_dict(resume.model)
        optimizer = self._optimizer(resume.step_size)
        optimizer.load_state_dict(resume.optimizer)
        if resume.algorithm:
            self.algorithm.load_state_dict(resume.algorithm)
        torch.set_rng_state(resume.rng)
        order = self._data_order()
        order.order = None if resume.order is None else resume.order.to(self.train_data.device)
        order.position = resume.position
        state = dataclasses.replace(
            resume,
            history=list(resume.history),
            trials=list(resume.trials),
            running_sum=resume.running_sum.to(self.train_data.device).clone(),
        )
        return state, optimizer, order

    def _snapshot(self, state: TrainingState, optimizer: torch.optim.Optimizer, order: DataOrder) -> TrainingState:
        return dataclasses.replace(
            state,
            model=self.model.state_dict(),
            optimizer=optimizer.state_dict(),
            rng=torch.get_rng_state(),
            order=order.order,
            position=order.position,
            algorithm=self.algorithm.state_dict(),
        )

    def _fit(self, on_metrics, progress, on_checkpoint, checkpoint_every, resume, stop_requested) -> TrainResult:
        total = self.config.total_samples(self.dataset_size)
        show = progress and self.group.is_main
        state, optimizer, order = self._start(show) if resume is None else self._restore(resume)
        bar = training_bar(total, state.samples, show)
        # The state to return to when an interval goes bad: the last evaluation point that passed.
        good = copy.deepcopy(self._snapshot(state, optimizer, order))
        targets = evaluation_points(total, self.config.first_eval, self.config.evals_per_decade)
        index = 0
        try:
            while index < len(targets):
                if self._passed(targets[index], state):
                    index += 1
                    continue
                interval = Interval(bar, on_checkpoint, checkpoint_every, stop_requested)
                metrics = self._train_interval(targets[index], total, state, optimizer, order, interval)
                problem = self._problem(metrics, interval)
                if problem is not None:
                    state, optimizer, order = self._recover(problem, good, state, metrics, bar, total)
                    continue
                state.running_sum.zero_()
                state.running_count = 0
                state.history.append(metrics)
                bar.update(state.samples - bar.n)
                bar.set_postfix(bound=f"{metrics.train_bound:.2f}", samples_per_s=f"{metrics.samples_per_second:,.0f}")
                if on_metrics is not None:
                    on_metrics(metrics)
                good = copy.deepcopy(self._snapshot(state, optimizer, order))
                if on_checkpoint is not None:
                    on_checkpoint(good)
                index += 1
        finally:
            bar.close()
        self.model.eval()
        warn_if_worse_than_untrained(state.history, state.initial_bound, state.step_size)
        return TrainResult(
            step_size=state.step_size,
            step_size_trials=state.trials,
            history=state.history,
            steps_by_threads=dict(sorted(self.threads.steps_by_count.items())),
        )

    @staticmethod
    def _passed(target: int, state: TrainingState) -> bool:
        """Whether the evaluation point at ``target`` samples is behind the run: trained past, or
        reached and evaluated. A run stopped on the very step that reached a point, or whose step-size
        selection (§5) used the whole budget, has reached it without evaluating it: it is evaluated
        then, before any further step (so a resumed run stays the uninterrupted one)."""
        if target != state.samples:
            return target < state.samples
        return bool(state.history) and state.history[-1].samples == target

    def _train_interval(
        self,
        target: int,
        total: int,
        state: TrainingState,
        optimizer: torch.optim.Optimizer,
        order: DataOrder,
        interval: Interval,
    ) -> Metrics:
        """Steps until ``target`` samples (checkpointing every ``checkpoint_every`` steps, stopping
        when asked), then the evaluation point's metrics; skipped steps counted in ``interval``."""
        guarded = self.algorithm.reports_skipped_steps  # skipped steps come back as NaN
        device = self.train_data.device
        schedule = SCHEDULES[self.config.schedule]
        tick, interval.first_step = time.perf_counter(), state.steps
        skipped, skipped_samples = torch.zeros((), device=device), torch.zeros((), device=device)
        while state.samples < target:
            batch = order.next()
            if state.samples + batch.shape[0] > total:  # stop exactly at the requested number of samples
                batch = batch[: total - state.samples]
            step_size = state.step_size * schedule.factor(state.samples / total)
            if optimizer.param_groups[0]["lr"] != step_size:  # a new stage (or a rollback)
                for group in optimizer.param_groups:
                    group["lr"] = step_size
            bound_sum = self._step(optimizer, batch)
            if guarded:
                bad = torch.isnan(bound_sum)
                skipped += bad
                skipped_samples += bad * batch.shape[0]
                bound_sum = torch.where(bad, torch.zeros_like(bound_sum), bound_sum)
            state.running_sum += bound_sum
            state.running_count += batch.shape[0]
            state.samples += batch.shape[0]
            state.steps += 1
            if state.steps % 50 == 0:
                interval.bar.update(state.samples - interval.bar.n)
            if interval.stop_requested is not None and interval.stop_requested():
                state.training_seconds += time.perf_counter() - tick
                if interval.on_checkpoint is not None:
                    interval.on_checkpoint(self._snapshot(state, optimizer, order))
                raise TrainingInterrupted(state.samples)
            if (
                interval.on_checkpoint is not None
                and interval.checkpoint_every
                and state.steps % interval.checkpoint_every == 0
                and state.samples < target
            ):
                # (at an evaluation point it comes after the evaluation)
                state.training_seconds += time.perf_counter() - tick
                interval.on_checkpoint(self._snapshot(state, optimizer, order))
                tick = time.perf_counter()  # writing it is not training time
        state.training_seconds += time.perf_counter() - tick
        interval.skipped = int(self.group.sum_(skipped).item()) if guarded else 0
        interval.steps = state.steps - interval.first_step
        counted = state.running_count - (int(skipped_samples.item()) if guarded else 0)
        state.skipped_steps += interval.skipped
        # No step since the last point (a step-size selection that ended on this one): no minibatch bound.
        minibatch = self.group.sum_(state.running_sum).item() / counted if counted > 0 else math.nan
        metrics = self._evaluate(
            state.samples, state.steps, optimizer.param_groups[0]["lr"], state.training_seconds, minibatch
        )
        metrics.skipped_steps, metrics.rollbacks = state.skipped_steps, state.rollbacks
        metrics.threads = self.threads.current
        return metrics

    def _problem(self, metrics: Metrics, interval: Interval) -> str | None:
        """What went bad in the interval that ended at ``metrics`` (a non-finite bound or
        parameters, or most steps skipped), or None."""
        finite = math.isfinite(metrics.train_bound) if self.has_bound else self._parameters_finite()
        if not finite:
            return f"bound {metrics.train_bound}" if self.has_bound else "non-finite parameters"
        if interval.skipped > interval.steps // 2:
            return f"{interval.skipped} of {interval.steps} steps had a non-finite loss or gradient"
        return None

    def _recover(self, problem: str, good: TrainingState, state: TrainingState, metrics: Metrics, bar, total: int):
        """Roll back to ``good`` with half the step size (the numeric guard), or — for an algorithm
        whose steps are not guarded, or after :data:`MAX_ROLLBACKS` — stop with TrainingDiverged."""
        if not self.algorithm.reports_skipped_steps or state.rollbacks >= MAX_ROLLBACKS:
            tried = f" (after {state.rollbacks} rollbacks halving the step size)" if state.rollbacks else ""
            raise TrainingDiverged(
                f"training diverged at {state.samples} samples ({problem}){tried}; try a smaller `step_size`"
            )
        state, optimizer, order = self._roll_back(good, state.step_size / 2, state.rollbacks + 1, state.skipped_steps)
        warnings.warn(
            f"training went bad at {metrics.samples} samples ({problem}); rollback {state.rollbacks} "
            f"of at most {MAX_ROLLBACKS}: back to {state.samples} samples with step size "
            f"{state.step_size:g}, half the last",
            TrainingWarning,
            stacklevel=3,
        )
        bar.reset(total)
        bar.update(state.samples)
        return state, optimizer, order

    def _roll_back(self, good: TrainingState, step_size: float, rollbacks: int, skipped_steps: int):
        """Continue from ``good`` with ``step_size`` (half the last one: numeric guard, after a bad
        interval; the last one, not ``good``'s, so that every rollback halves it again)."""
        state, optimizer, order = self._restore(good)
        state.step_size = step_size
        for group in optimizer.param_groups:
            group["lr"] = state.step_size
        state.rollbacks, state.skipped_steps = rollbacks, skipped_steps
        return state, optimizer, order

    def _evaluate(self, samples: int, steps: int, step_size: float, seconds: float, minibatch_bound: float) -> Metrics:
        batch, estimator = self.config.eval_batch_size, bound_estimator(self.config.estimator)

        def bound(data: torch.Tensor | None) -> float | None:
            if data is None:
                return None
            if not self.has_bound:  # no trained encoder: its bound would be meaningless
                return math.nan
            return evaluate_bound(self.model, data, estimator=estimator, batch_size=batch).mean

        with self.threads.for_evaluation():
            train_bound, valid_bound, test_bound = [
                bound(data) for data in (self.train_eval, self.valid_eval, self.test_eval)
            ]
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

    def _parameters_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
