"""The AEVB algorithm (paper Algorithm 1) with the training procedure of §5.

Each iteration draws a random minibatch of M datapoints (without replacement within an epoch),
draws ε for L samples per datapoint, and takes a gradient step on the minibatch estimate of the
bound. The settings are the paper's: M = 100, L = 1, Adagrad with a global step size chosen from
{0.01, 0.02, 0.1} by the training bound of the first iterations, and MAP training with a N(0, I)
prior on the parameters (weight decay).

Scaling. The MAP objective is (N/M) Σ_minibatch 𝓛̃(x⁽ⁱ⁾) + log p(θ), with log p(θ) = −½‖θ‖²
(+ const). We minimise it divided by N, i.e. the loss

    −(1/M) Σ_minibatch 𝓛̃(x⁽ⁱ⁾) + (λ / 2N) ‖θ‖²,       λ = prior precision (1 for N(0, I)),

so the reported numbers are nats per datapoint and the weight decay handed to the optimiser is
exactly λ / N. Dividing by N leaves Adagrad's and Adam's steps unchanged (both are invariant to
the scale of the gradient, up to their ε).
"""

from .algorithm import AEVB, Algorithm
from .config import (
    BINARIZATIONS,
    DEFAULT_MAX_SAMPLES,
    EVALUATION_BINARIZATION_SEED,
    PAPER_STEP_SIZES,
    Metrics,
    StepSizeTrial,
    TrainConfig,
    TrainResult,
    evaluation_data,
    evaluation_points,
)
from .distributed import Shard
from .evaluator import INITIAL_BOUND_POINTS
from .numeric_guard import MAX_ROLLBACKS
from .reporting import TrainingWarning
from .state import DataOrder, TrainingState
from .step_memory import require_training_step_memory
from .step_size import StepSizeChoice, select_step_size
from .trainer import Trainer

__all__ = [
    "AEVB",
    "Algorithm",
    "BINARIZATIONS",
    "DEFAULT_MAX_SAMPLES",
    "DataOrder",
    "EVALUATION_BINARIZATION_SEED",
    "INITIAL_BOUND_POINTS",
    "MAX_ROLLBACKS",
    "Metrics",
    "PAPER_STEP_SIZES",
    "Shard",
    "StepSizeChoice",
    "StepSizeTrial",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingState",
    "TrainingWarning",
    "evaluation_data",
    "evaluation_points",
    "require_training_step_memory",
    "select_step_size",
]
