"""What one iteration of a learning algorithm does: the protocol, and AEVB (Algorithm 1) itself."""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import ClassVar, Mapping

import torch

from ..engines import Engine, EngineRequest, engine_class, select_engine
from ..errors import AevbError
from ..models.config import ModelConfig
from ..models.families import check_estimator
from ..models.vae import VAE
from ..objectives.estimators import get_estimator
from .config import TrainConfig
from .distributed import SINGLE_PROCESS, ProcessGroup, Shard
from .optimizers import guarded_step, non_finite


class Algorithm:
    """One iteration of a learning algorithm on a minibatch: the base class of every algorithm the
    trainer runs. AEVB is the paper's; the baselines it is compared with (wake-sleep, Monte Carlo
    EM; :mod:`aevb.baselines`) and full VB (App. F) plug in here with the same optimiser, data
    order and evaluation. A subclass sets ``name`` and implements :meth:`step`; everything else
    has a default here, and its capabilities are these class attributes:

    ``has_bound`` says whether the encoder-based lower bound means anything for the model the
    algorithm trains. When False (Monte Carlo EM trains no encoder) the trainer reports NaN
    bounds, checks the parameters for divergence instead, and needs an explicit step size, as the
    step-size selection of §5 ranks candidates by the bound; and evaluation
    (:func:`aevb.runs.evaluate_run`, Figure 3) does without the encoder: importance sampling from
    the prior, HMC chains started at prior draws resampled by p(x|z).
    """

    name: ClassVar[str]  # as the ``algorithm`` setting names it
    has_bound: ClassVar[bool] = True
    reports_skipped_steps: ClassVar[bool] = False  # True: a NaN bound from step() is a step the guard skipped
    distributable: ClassVar[bool] = False  # True: several processes can share its minibatches (``shard``)
    #: Model settings the algorithm needs (full VB: a posterior over the decoder's parameters).
    model_options: ClassVar[Mapping[str, object]] = MappingProxyType({})
    num_samples: int = 1  # samples of z per datapoint in a step (L)
    engine: Engine | None = None  # the engine computing a step's gradient, if any
    engine_used: str | None = None  # its description, for summary.json

    @property
    def steps_thread_count_invariant(self) -> bool:
        """Whether a step gives the same bits on any number of CPU threads (its engine says so)."""
        return self.engine is not None and self.engine.thread_count_invariant

    @classmethod
    def from_config(cls, config: TrainConfig) -> Algorithm:
        """The algorithm with the run's settings (``config``: the estimator, L, the engine, ... as
        the algorithm takes them); by default none."""
        return cls()

    def check_model(self, config: ModelConfig) -> None:
        """A one-line AevbError, before anything is written, when this algorithm cannot train a
        model of ``config`` (by default it can train any)."""

    def check_engine(
        self, model: VAE, device: torch.device, dtype: torch.dtype = torch.float32, distributed: bool = False
    ) -> None:
        """A one-line AevbError, before anything is written, when the step cannot run ``model``
        on ``device`` (by default it can)."""

    def setup(self, model: VAE, train: torch.Tensor, group: ProcessGroup = SINGLE_PROCESS) -> None:
        """Called once before training (e.g. to allocate per-datapoint state or an engine)."""

    def teardown(self) -> None:
        """Called once after training: drop what :meth:`setup` made."""

    def step(
        self,
        model: VAE,
        optimizer: torch.optim.Optimizer,
        x: torch.Tensor,
        indices: torch.Tensor,
        shard: Shard | None = None,
    ) -> torch.Tensor:
        """Update the parameters on minibatch x (M, D) of training rows ``indices`` (M,); return
        the sum over the minibatch of a per-datapoint bound estimate (0-dim tensor, nats), NaN
        when the algorithm has none."""
        raise NotImplementedError

    def parameter_groups(self, model: VAE, weight_decay: float) -> list[dict] | None:
        """The optimiser's parameter groups; None: all of the model's parameters, one group with
        the run's weight decay."""
        return None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint keeps of the algorithm's own state (per-datapoint samples, ...)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`'s state on resume."""

    def run_summary(self, model: VAE, train_bound: float | None) -> dict:
        """Entries the algorithm adds to a run's summary.json."""
        return {}

    def step_bound(self, model: VAE, evaluated_bound: float) -> float:
        """What the bound its steps report (per datapoint) is for a model whose evaluated bound
        is ``evaluated_bound``: the same for an algorithm whose steps report the bound itself. The
        step-size selection's divergence floor (§5) compares the trials' step bounds with it."""
        return evaluated_bound


class AEVB(Algorithm):
    """Algorithm 1: a gradient step on the minibatch SGVB estimate of the bound (per datapoint).

    ``estimator`` names the objective (§2.3: "A", "B"; or "IWAE"); ``engine`` how its gradient is
    computed (:mod:`aevb.engines`: "native", "fused", "autograd", or "auto", the fastest that
    serves the model), chosen once in :meth:`setup` by :func:`aevb.engines.select_engine`.
    Subclasses with another objective (full VB, App. F) override :meth:`objective` and set
    ``estimator_name`` None, which leaves them to autograd.
    """

    name = "aevb"

    @classmethod
    def from_config(cls, config: TrainConfig) -> AEVB:
        return cls(config.estimator, config.num_samples, config.engine)

    has_bound = True
    reports_skipped_steps = True  # a step the numeric guard skipped returns a NaN bound
    distributable = True  # several processes can share its minibatches

    def __init__(self, estimator: str = "B", num_samples: int = 1, engine: str = "auto"):
        self.estimator = estimator.upper()
        self.estimate = get_estimator(estimator)
        self.estimator_name: str | None = self.estimator
        self.num_samples = num_samples
        self.engine_setting = engine
        self.engine: Engine | None = None
        self.engine_used: str | None = None  # the engine's description, for summary.json

    def check_model(self, config: ModelConfig) -> None:
        refuse_decoder_posterior(config)
        check_estimator(config, self.estimator)

    def objective(
        self, model: VAE, x: torch.Tensor, num_samples: int, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-datapoint bound estimates (M,) for x (M, D), nats: the estimator's."""
        return self.estimate(model, x, num_samples, noise=noise)

    def engine_request(
        self, model: VAE, device: torch.device, dtype: torch.dtype, distributed: bool = False
    ) -> EngineRequest:
        return EngineRequest(
            model, self.objective, self.estimator_name, self.num_samples, torch.device(device), dtype, distributed
        )

    def check_engine(
        self, model: VAE, device: torch.device, dtype: torch.dtype = torch.float32, distributed: bool = False
    ) -> None:
        """A one-line AevbError now, before anything is written, when the ``engine`` setting cannot
        train ``model`` (which may live on the meta device) on ``device``."""
        engine_class(self.engine_setting, self.engine_request(model, device, dtype, distributed))

    def setup(self, model: VAE, train: torch.Tensor, group: ProcessGroup = SINGLE_PROCESS) -> None:
        self.teardown()
        dtype = next(model.parameters()).dtype
        self.engine = select_engine(
            self.engine_setting, self.engine_request(model, train.device, dtype, group.distributed)
        )
        self.engine_used = self.engine.description

    def teardown(self) -> None:
        """Drop the engine's buffers and process-group state (before the process group goes away:
        a DDP reducer outliving its group aborts the process at exit)."""
        if self.engine is not None:
            self.engine.close()
        self.engine = None

    def step(
        self,
        model: VAE,
        optimizer: torch.optim.Optimizer,
        x: torch.Tensor,
        indices: torch.Tensor,
        shard: Shard | None = None,
    ) -> torch.Tensor:
        noise = None
        if shard is not None:  # the whole minibatch's ε, as one process draws it; keep our rows
            latent = model.prior().event_shape
            noise = torch.empty(self.num_samples, shard.size, *latent, dtype=x.dtype, device=x.device).normal_()[
                :, shard.rows
            ]
        if self.engine is None or self.engine.model is not model:  # a step without setup(): one process
            self.setup(model, x)
        engine = self.engine
        if engine.applies_optimizer(optimizer, x, shard):
            # The update inside the step, each layer's while its gradient is in cache; a skipped
            # step (non-finite loss or gradient) comes back as NaN.
            return engine.gradient_and_update(x, noise, optimizer)
        gradient = engine.gradient(x, noise, shard)
        # A non-finite loss or gradient never reaches the parameters: the step is skipped (on the
        # device, no host sync) and reported as a NaN bound, which the trainer counts.
        bad = non_finite(gradient.parameters, gradient.bound_sum, gradient.flat)
        guarded_step(optimizer, bad)
        return torch.where(bad > 0, torch.full_like(gradient.bound_sum, math.nan), gradient.bound_sum)


def refuse_conditional(algorithm: str, config: ModelConfig) -> None:
    """Only AEVB trains a conditional VAE (its labels reach the estimators, not other algorithms)."""
    if getattr(config, "num_classes", None) is not None:
        raise AevbError(f"`conditional` trains with `algorithm` aevb only, not {algorithm}")


def refuse_decoder_posterior(config: ModelConfig) -> None:
    """A posterior over the decoder's parameters (App. F) is full VB's to train."""
    if getattr(config, "decoder_posterior", "point") != "point":
        raise AevbError("a posterior over the decoder's parameters is trained by `algorithm` full-vb only")
