"""The trainer: minibatches, the step-size selection of §5 (:mod:`aevb.training.step_size`), evaluation
points (what is measured there: :mod:`aevb.training.evaluator`), checkpoints and the numeric guard
(skipped steps, rollbacks with half the step size: :mod:`aevb.training.numeric_guard`)."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Callable

import numpy as np
import torch

from ..data.sources import StreamedRows, as_rows, is_streamed
from ..errors import AevbError, TrainingInterrupted
from ..models.config import ModelConfig
from ..models.vae import VAE
from ..threads import StepThreads
from ..validation import require_rows
from .algorithm import AEVB, Algorithm
from .config import Metrics, StepSizeTrial, TrainConfig, TrainResult, evaluation_points
from .distributed import SINGLE_PROCESS, ProcessGroup, Shard
from .early_stopping import (
    agreed_valid_bound,
    record_evaluation,
    require_validation_for_early_stopping,
    should_stop_early,
)
from .evaluator import INITIAL_BOUND_POINTS, Evaluator, evaluation_point_passed
from .numeric_guard import SkippedSteps, interval_problem, roll_back
from .optimizers import OPTIMIZERS, SCHEDULES
from .preflight import Preflight, run_preflight
from .reporting import refuse_untrainable, training_bar, warn_if_worse_than_untrained
from .state import DataOrder, Interval, TrainingState
from .step_size import StepSizeChoice, select_step_size, steps_per_pass

#: What the Trainer takes as a split (:func:`aevb.data.sources.as_rows`).
TrainingData = torch.Tensor | np.ndarray | StreamedRows | torch.utils.data.Dataset | torch.utils.data.DataLoader


class Trainer:
    """Runs Algorithm 1 (or another :class:`Algorithm`) on a model and a training set, in memory or streamed.

    Args:
        model: the VAE, or any ``nn.Module`` with ``encode(x)`` → q(z|x), ``decode(z)`` → p(x|z) and
            ``prior()`` → p(z) (``torch.distributions``; see :mod:`aevb.objectives.estimators`). A
            fresh run re-initialises it (§5) through its ``reset_parameters`` when it has one and
            ``config.initialise`` is true; otherwise it trains from the weights it has.
        train: the training data (:func:`aevb.data.sources.as_rows`): an (N, D) tensor on the device
            to train on, of any real, integer or boolean dtype, or a numpy array (converted once to
            the model's dtype; uint8 grey levels k to k / ``pixel_divisor``; images (N, H, W),
            (N, C, H, W) or (N, H, W, C) flattened channels-first); or a map-style
            ``torch.utils.data.Dataset`` (items ``x`` or ``(x, y)``) or a ``DataLoader`` over one
            (its collate function used; the order and minibatch size are the Trainer's), read
            minibatch by minibatch onto the model's device: data larger than memory.
        config: the settings.
        valid: optional validation data, as ``train``, evaluated at each evaluation point.
        test: optional test data, likewise — for reproducing the paper's train/test
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
        pixel_divisor: uint8 data hold grey levels k, read as k / ``pixel_divisor`` (default 255,
            :data:`aevb.data.USER_PIXEL_DIVISOR`; the paper's MNIST had 256).
    """

    def __init__(
        self,
        model: VAE,
        train: TrainingData,
        config: TrainConfig,
        valid: TrainingData | None = None,
        algorithm: Algorithm | None = None,
        test: TrainingData | None = None,
        group: ProcessGroup = SINGLE_PROCESS,
        threads: int | None = None,
        data_name: str | None = None,
        preflight: Preflight | None = None,
        pixel_divisor: float | None = None,
    ):
        self.data_name = data_name
        parameter = next(model.parameters(), None)
        dtype = torch.float32 if parameter is None else parameter.dtype
        device = None if parameter is None else parameter.device  # (where a Dataset's rows go)
        train, valid, test = (
            None if data is None else as_rows(data, name, dtype=dtype, device=device, pixel_divisor=pixel_divisor)
            for name, data in (("train", train), ("valid", valid), ("test", test))
        )
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
        require_validation_for_early_stopping(
            self.config.early_stopping, 0 if valid is None else valid.shape[0], self.has_bound
        )
        self.evaluator = Evaluator(model, self.config, self.threads, self.has_bound, train, valid, test)

    def _optimizer(self, step_size: float) -> torch.optim.Optimizer:
        weight_decay = self.config.prior_precision / self.dataset_size
        # An algorithm may group the parameters (full VB: no weight decay where a KL term is the prior).
        groups = self.algorithm.parameter_groups(self.model, weight_decay)
        parameters = self.model.parameters() if groups is None else groups
        options = {} if self.config.optimizer_eps is None else {"eps": self.config.optimizer_eps}
        factory = OPTIMIZERS[self.config.optimizer]
        if getattr(factory, "takes_gradient_scale", False):  # (an objective summed over the minibatch)
            options["gradient_scale"] = float(self.config.batch_size)
        return factory(parameters, lr=step_size, weight_decay=weight_decay, **options)

    def _data_order(self) -> DataOrder:
        replacement = self.config.minibatches == "with-replacement"
        return DataOrder(self.dataset_size, self.config.batch_size, self.train_data.device, replacement)

    def _load(self, batch: torch.Tensor, rows: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's shard of minibatch ``batch`` (all of it on one process): its indices and
        data rows, freshly binarised with dynamic binarisation. The binarisation noise is drawn
        for the whole minibatch, so that every process's draws match a one-process run."""
        rows = self.group.shard(batch.shape[0]) if rows is None else rows
        indices = batch[rows]
        if not is_streamed(self.train_data):
            x = torch.index_select(self.train_data, 0, indices)  # a row copy each; [indices] is slower
        else:
            x = self.train_data.read(indices.cpu())
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

    def select_step_size(
        self,
        progress: bool = False,
        untrained_bound: float | None = None,
        stop_requested: Callable[[], bool] | None = None,
    ) -> StepSizeChoice:
        """§5: the step size from ``config.step_size_candidates`` whose trial of ``selection_steps``
        iterations ends on the highest training bound (:func:`aevb.training.step_size.select_step_size`);
        the model and the random stream are left where they were. ``progress``: a bar over the
        candidates' steps; ``untrained_bound``: the untrained model's, below which a candidate has diverged;
        ``stop_requested``: as :meth:`fit`'s, checked after every trial step."""
        return select_step_size(
            self.model,
            self.config.step_size_candidates,
            self.config.selection_steps,
            self._optimizer,
            self._data_order,
            self._step,
            self.group.sum_,
            progress,
            scored_steps=steps_per_pass(self.config, self.dataset_size),
            untrained_bound=untrained_bound,
            stop_requested=stop_requested,
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
        """Train until the configured number of samples (or until ``config.early_stopping``
        evaluation points in a row bring no higher validation bound); evaluate at log-spaced points.

        ``on_metrics`` is called with each :class:`Metrics` as soon as it is measured (the run
        directory writes it to ``metrics.jsonl`` there and then). ``on_checkpoint`` is called with
        the :class:`TrainingState` after every ``checkpoint_every`` steps and after every
        evaluation point (its tensors are the live ones: write them before returning). ``resume``
        continues from such a state; the run then ends with the parameters, bit for bit, of a run
        that was never interrupted (on the same device, with a fixed ``threads`` count). When
        ``stop_requested()`` turns true (checked after every step), the state goes to
        ``on_checkpoint`` and :class:`~aevb.errors.TrainingInterrupted` is raised; during the
        step-size trials it is raised at once, at 0 samples, with no state to keep.
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

    def _start(
        self, progress: bool = False, stop_requested: Callable[[], bool] | None = None
    ) -> tuple[TrainingState, torch.optim.Optimizer, DataOrder]:
        """A fresh run: seed, initialise (§5), choose the step size (§5) unless given."""
        config = self.config
        torch.manual_seed(config.seed)
        # A module of the user's own may have no reset_parameters: it starts from its weights.
        reset = getattr(self.model, "reset_parameters", None) if config.initialise else None
        if reset is not None:
            reset()
            initialise_from_data = getattr(self.model, "initialise_from_data", None)
            if initialise_from_data is not None:  # (it reads the mean image: a streamed set's in one scan)
                initialise_from_data(self.train_data.mean_row() if is_streamed(self.train_data) else self.train_data)
        self.model.train()
        self._setup_algorithm()
        initial_bound = self.evaluator.initial_bound()
        scanned = self.train_data[:INITIAL_BOUND_POINTS] if is_streamed(self.train_data) else self.train_data
        refuse_untrainable(initial_bound, self.model, scanned, self.data_name)
        started = time.perf_counter()
        trials: list[StepSizeTrial] = []
        step_size = config.step_size
        if step_size is None:  # (then the run starts from where the trials started)
            floor_from = None if initial_bound is None else self.algorithm.step_bound(self.model, initial_bound)
            choice = self.select_step_size(progress, floor_from, stop_requested)
            step_size, trials = choice.step_size, choice.trials
        optimizer = self._optimizer(step_size)
        order = self._data_order()
        state = TrainingState(
            samples=0,
            steps=0,
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
        state, optimizer, order = self._start(show, stop_requested) if resume is None else self._restore(resume)
        bar = training_bar(total, state.samples, show)
        # The state to return to when an interval goes bad: the last evaluation point that passed.
        good = copy.deepcopy(self._snapshot(state, optimizer, order))
        targets = evaluation_points(total, self.config.first_eval, self.config.evals_per_decade)
        index = 0
        try:
            while index < len(targets) and not state.stopped_early:
                if evaluation_point_passed(targets[index], state):
                    index += 1
                    continue
                interval = Interval(bar, on_checkpoint, checkpoint_every, stop_requested)
                metrics = self._train_interval(targets[index], total, state, optimizer, order, interval)
                problem = interval_problem(metrics, interval, self.model, self.has_bound)
                if problem is not None:
                    guarded = self.algorithm.reports_skipped_steps
                    state, optimizer, order = roll_back(problem, good, state, metrics, guarded, self._restore)
                    bar.reset(total)
                    bar.update(state.samples)
                    continue
                state.running_sum.zero_()
                state.running_count = 0
                metrics.valid_bound = agreed_valid_bound(metrics.valid_bound, self.group, self.train_data.device)
                state.history.append(metrics)
                record_evaluation(state, metrics)
                # (on the budget's last point the run ends anyway: it did not stop early)
                state.stopped_early = should_stop_early(state, self.config.early_stopping) and index + 1 < len(targets)
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
            stopped_early_at=state.samples if state.stopped_early else None,
            best_samples=state.best_samples,
            best_valid_bound=state.best_valid_bound,
        )

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
        skipped = SkippedSteps(self.algorithm.reports_skipped_steps, self.train_data.device)
        schedule = SCHEDULES[self.config.schedule]
        tick, interval.first_step = time.perf_counter(), state.steps
        while state.samples < target:
            batch = order.next()
            if state.samples + batch.shape[0] > total:  # stop exactly at the requested number of samples
                batch = batch[: total - state.samples]
            step_size = state.step_size * schedule.factor(state.samples / total)
            if optimizer.param_groups[0]["lr"] != step_size:  # a new stage (or a rollback)
                for group in optimizer.param_groups:
                    group["lr"] = step_size
            state.running_sum += skipped.count(self._step(optimizer, batch), batch.shape[0])
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
        interval.skipped = skipped.steps(self.group.sum_)
        interval.steps = state.steps - interval.first_step
        counted = state.running_count - skipped.samples()
        state.skipped_steps += interval.skipped
        # No step since the last point (a step-size selection that ended on this one): no minibatch bound.
        minibatch = self.group.sum_(state.running_sum).item() / counted if counted > 0 else math.nan
        metrics = self.evaluator.metrics(
            state.samples, state.steps, optimizer.param_groups[0]["lr"], state.training_seconds, minibatch
        )
        metrics.skipped_steps, metrics.rollbacks = state.skipped_steps, state.rollbacks
        metrics.threads = self.threads.current
        return metrics
