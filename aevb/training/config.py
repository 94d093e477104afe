"""The settings of a training run (Algorithm 1, §5) and what it reports: a metrics line per evaluation
point, the step-size trials, and the data a model is scored on."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..choices import AUTO_ENGINE, MINIBATCH_ORDERS
from ..config import JsonConfig
from ..errors import AevbError

BINARIZATIONS = ("none", "dynamic")


PAPER_STEP_SIZES = (0.01, 0.02, 0.1)  # §5
#: §5's "first few iterations" that choose the step size, read as passes through the training set
#: (aevb.training.step_size says why, and docs/results.md measures it).
SELECTION_EPOCHS = 20.0


#: Training samples of a run that names no stopping point: minutes on a laptop (the paper trains
#: 10⁸ per curve, §5 / Fig. 2: ``max_samples=10**8``).
DEFAULT_MAX_SAMPLES = 1_000_000


#: Seeds are 0 ≤ seed < SEED_LIMIT: torch takes up to 2⁶⁴ − 1 and reads −1 as that, so the range
#: that every command and file accepts is the one where a seed means one thing.
SEED_LIMIT = 2**63


#: What a run written before a setting existed did, for config.json files without its key: the
#: minibatch order was epochs of a permutation before ``minibatches`` (session 17).
WRITTEN_BEFORE = {"minibatches": "shuffled"}


@dataclass
class TrainConfig(JsonConfig):
    """Settings of Algorithm 1; the defaults are the paper's (§5)."""

    batch_size: int = 100  # M (§5)
    num_samples: int = 1  # L (§5)
    estimator: str = "B"  # §2.3; B is what the paper uses for the VAE
    # §5's Adagrad as the authors' code runs it (100 steps summed before the first move); "adagrad": torch's; "adam"
    optimizer: str = "adagrad-warmup"
    optimizer_eps: float | None = None  # the optimiser's ε (None: torch's default)
    schedule: str = "constant"  # step size over the run: "constant" (§5) or "iwae" (Burda et al.)
    step_size: float | None = None  # None: choose from step_size_candidates (§5)
    step_size_candidates: tuple[float, ...] = PAPER_STEP_SIZES
    selection_epochs: float = SELECTION_EPOCHS  # §5's "first few iterations": passes through the training set
    selection_steps: int | None = None  # iterations per candidate instead (None: from selection_epochs)
    prior_precision: float = 1.0  # λ of the N(0, I/λ) prior on θ, φ (MAP, §5); 0 = none
    max_samples: int | None = None  # stop after this many training samples ...
    epochs: float | None = None  # ... or epochs, whichever comes first (neither: DEFAULT_MAX_SAMPLES)
    binarize: str = "none"  # "dynamic": fresh Bernoulli draw of x at every use
    # Algorithm 1's "random minibatch": M rows drawn with replacement every step, as the authors' code draws them
    # (anglepy wzoptim.step_va); "shuffled": passes through a fresh permutation
    minibatches: str = "with-replacement"
    seed: int = 0
    # a fresh run starts from §5's initialisation (the model's reset_parameters); False: from the model's weights as
    # given
    initialise: bool = True
    evals_per_decade: int = 8  # evaluation points, log-spaced in samples seen
    first_eval: int = 10_000  # samples seen at the first evaluation point
    eval_subset: int | None = None  # evaluate on at most this many points per split
    eval_batch_size: int | None = None  # rows evaluated at once (None: aevb.evaluation.default_chunk_rows)
    # how gradients are computed (aevb.engines): "native", "fused", "autograd", or "auto": the fastest that serves the
    # model
    engine: str = "auto"
    # stop after this many evaluation points in a row without a higher validation bound (None: train to the budget)
    early_stopping: int | None = None

    def __post_init__(self) -> None:
        # The registries a setting is checked against import torch: imported here, when settings are
        # made, so that the command line can quote the defaults above without importing torch.
        from ..engines import ENGINES
        from ..objectives.estimators import get_estimator
        from .optimizers import OPTIMIZERS, SCHEDULES

        positive = {
            "batch_size": self.batch_size,
            "num_samples": self.num_samples,
            "evals_per_decade": self.evals_per_decade,
            "first_eval": self.first_eval,
        }
        if self.eval_batch_size is not None:
            positive["eval_batch_size"] = self.eval_batch_size
        if self.early_stopping is not None:
            positive["early_stopping"] = self.early_stopping
        if self.selection_steps is not None:
            positive["selection_steps"] = self.selection_steps
        for name, value in positive.items():
            if int(value) < 1:
                raise AevbError(f"`{name}` must be a positive integer, got {value}")
        if self.optimizer not in OPTIMIZERS:
            raise AevbError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise AevbError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.optimizer_eps is not None and not (math.isfinite(self.optimizer_eps) and self.optimizer_eps > 0):
            raise AevbError(f"`optimizer_eps` must be a positive number, got {self.optimizer_eps}")
        if self.minibatches not in MINIBATCH_ORDERS:
            raise AevbError(f"unknown minibatches {self.minibatches!r}; choose one of {', '.join(MINIBATCH_ORDERS)}")
        if self.binarize not in BINARIZATIONS:
            raise AevbError(f"unknown binarization {self.binarize!r}; choose one of {', '.join(BINARIZATIONS)}")
        get_estimator(self.estimator)
        self.estimator = self.estimator.upper()
        if self.engine != AUTO_ENGINE and self.engine not in ENGINES:
            raise AevbError(f"unknown engine {self.engine!r}; choose one of {', '.join((AUTO_ENGINE, *ENGINES))}")
        if self.step_size is not None and not (math.isfinite(self.step_size) and self.step_size > 0):
            raise AevbError(f"`step_size` must be a positive number, got {self.step_size}")
        self.step_size_candidates = tuple(float(c) for c in self.step_size_candidates)
        if not self.step_size_candidates or any(not (c > 0) for c in self.step_size_candidates):
            raise AevbError("`step_size_candidates` must be positive numbers")
        if not (math.isfinite(self.prior_precision) and self.prior_precision >= 0):
            raise AevbError(f"`prior_precision` must be >= 0, got {self.prior_precision}")
        if not (math.isfinite(self.selection_epochs) and self.selection_epochs > 0):
            raise AevbError(f"`selection_epochs` must be a positive number, got {self.selection_epochs}")
        if self.max_samples is not None and self.max_samples < 1:
            raise AevbError(f"`max_samples` must be a positive integer, got {self.max_samples}")
        if self.epochs is not None and not (math.isfinite(self.epochs) and self.epochs > 0):
            raise AevbError(f"`epochs` must be a positive number, got {self.epochs}")
        if self.max_samples is None and self.epochs is None:
            self.max_samples = DEFAULT_MAX_SAMPLES
        if not 0 <= self.seed < SEED_LIMIT:
            raise AevbError(f"`seed` must be a whole number in 0 ... 2**63 - 1, got {self.seed}")
        if self.eval_subset is not None and self.eval_subset < 1:
            raise AevbError(f"`eval_subset` must be a positive integer, got {self.eval_subset}")

    @classmethod
    def from_run(cls, values: dict, where: str | None = None) -> TrainConfig:
        """The settings a run directory's config.json records, keys it lacks read as what a run
        written before they existed did (:data:`WRITTEN_BEFORE`)."""
        return cls.from_dict({**WRITTEN_BEFORE, **values} if isinstance(values, dict) else values, where)

    def total_samples(self, dataset_size: int) -> int:
        """Training samples to process: the tighter of max_samples and epochs × N."""
        limits = [self.max_samples] if self.max_samples is not None else []
        if self.epochs is not None:
            limits.append(max(1, round(self.epochs * dataset_size)))
        return int(min(limits))

    def minibatch_rows(self, dataset_size: int) -> int:
        """Rows of a whole minibatch: ``batch_size``, at most the ``dataset_size`` rows there are."""
        return min(self.batch_size, dataset_size)


@dataclass
class Metrics(JsonConfig):
    """One evaluation point: a line of ``metrics.jsonl``. Bounds are nats per datapoint."""

    epoch: float
    samples: int
    train_bound: float
    valid_bound: float | None
    minibatch_bound: float  # running mean of the minibatch estimates since the last point
    seconds: float  # wall time spent training (evaluation excluded)
    samples_per_second: float  # training throughput so far (step-size selection included)
    step_size: float
    steps: int
    test_bound: float | None = None  # only when the trainer was given test data (figure reproduction)
    skipped_steps: int = 0  # steps skipped so far for a non-finite loss or gradient
    rollbacks: int = 0  # returns to the last good evaluation point, step size halved each time
    threads: int | None = None  # CPU threads the steps ran with at this point (aevb.threads)


@dataclass
class StepSizeTrial:
    step_size: float
    mean_bound: float  # mean minibatch bound over the trial's last pass (−inf: it diverged)


@dataclass
class TrainResult:
    step_size: float
    history: list[Metrics] = field(default_factory=list)
    step_size_trials: list[StepSizeTrial] = field(default_factory=list)
    # CPU thread count → steps run with it by this fit (since a resume, if resumed)
    steps_by_threads: dict[int, int] = field(default_factory=dict)
    # the training samples at which `early_stopping` ended the run before its budget; None: it ran to the end
    stopped_early_at: int | None = None
    best_samples: int | None = None  # the evaluation point with the highest validation bound (None: no validation)
    best_valid_bound: float | None = None


def evaluation_points(total: int, first: int, per_decade: int) -> list[int]:
    """Sample counts at which to evaluate: log-spaced from ``first``, always ending at ``total``."""
    points = []
    k = math.ceil(per_decade * math.log10(first))
    while (value := round(10 ** (k / per_decade))) < total:
        if not points or value > points[-1]:
            points.append(value)
        k += 1
    return points + [total]
