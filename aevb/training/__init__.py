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

from typing import TYPE_CHECKING

from ..lazy import lazy_names

if TYPE_CHECKING:  # what type checkers and the API reference see; at run time __getattr__ imports them
    from .algorithm import AEVB, Algorithm
    from .config import (
        BINARIZATIONS,
        DEFAULT_MAX_SAMPLES,
        PAPER_STEP_SIZES,
        Metrics,
        StepSizeTrial,
        TrainConfig,
        TrainResult,
        evaluation_points,
    )
    from .distributed import Shard
    from .evaluator import EVALUATION_BINARIZATION_SEED, INITIAL_BOUND_POINTS, evaluation_data
    from .numeric_guard import MAX_ROLLBACKS
    from .reporting import TrainingWarning
    from .state import DataOrder, TrainingState
    from .step_memory import require_training_step_memory
    from .step_size import StepSizeChoice, select_step_size
    from .trainer import Trainer


# The names below are imported on first use (PEP 562), as aevb's own are: :mod:`.config` holds the
# settings and imports no torch, so the command line can quote TrainConfig's defaults in its help
# without the seconds that importing the training loop takes.
_LAZY = {
    "AEVB": "algorithm",
    "Algorithm": "algorithm",
    "BINARIZATIONS": "config",
    "DEFAULT_MAX_SAMPLES": "config",
    "EVALUATION_BINARIZATION_SEED": "evaluator",
    "PAPER_STEP_SIZES": "config",
    "Metrics": "config",
    "StepSizeTrial": "config",
    "TrainConfig": "config",
    "TrainResult": "config",
    "evaluation_data": "evaluator",
    "evaluation_points": "config",
    "Shard": "distributed",
    "INITIAL_BOUND_POINTS": "evaluator",
    "MAX_ROLLBACKS": "numeric_guard",
    "TrainingWarning": "reporting",
    "DataOrder": "state",
    "TrainingState": "state",
    "require_training_step_memory": "step_memory",
    "StepSizeChoice": "step_size",
    "select_step_size": "step_size",
    "Trainer": "trainer",
}


__getattr__ = lazy_names(__name__, _LAZY, globals())


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
