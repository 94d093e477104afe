"""The best model by validation bound, and early stopping: which evaluation point has the highest
validation bound so far, and whether ``early_stopping`` evaluation points in a row have passed
without a higher one. What is counted lives in the :class:`~aevb.training.state.TrainingState`,
so that a resumed run (its checkpoint holds it) stops where the uninterrupted one would."""

from __future__ import annotations

import torch

from ..errors import AevbError
from ..process_group import ProcessGroup
from .config import Metrics
from .state import TrainingState


def require_validation_for_early_stopping(early_stopping: int | None, valid_points: int, has_bound: bool) -> None:
    """A one-line error naming the setting when ``early_stopping`` is asked for without a
    validation split (``valid_points`` rows) or a bound (``has_bound``) to judge improvement by."""
    if early_stopping is not None and not has_bound:
        raise AevbError("`early_stopping` watches the validation bound, which this algorithm has not; leave it out")
    if early_stopping is not None and valid_points == 0:
        raise AevbError(
            "`early_stopping` needs a validation split to watch, and this run has none (it trains on "
            "train + valid, or its data have no validation rows); leave `early_stopping` out"
        )


def agreed_valid_bound(valid_bound: float | None, group: ProcessGroup, device: torch.device) -> float | None:
    """Rank 0's validation bound on every process: each process evaluates the same points, but at
    its own thread count, so the last bits may differ; the decision to stop must not."""
    if not group.distributed or valid_bound is None:
        return valid_bound
    shared = torch.tensor([valid_bound if group.is_main else 0.0], dtype=torch.float64, device=device)
    return float(group.sum_(shared).item())


def record_evaluation(state: TrainingState, metrics: Metrics) -> bool:
    """Count the evaluation point ``metrics`` into ``state``'s best-so-far; True when its
    validation bound is the highest yet (the first one is; NaN, an algorithm without a bound,
    never is). Without a validation bound nothing is counted."""
    valid = metrics.valid_bound
    if valid is None or valid != valid:
        return False
    if state.best_valid_bound is None or valid > state.best_valid_bound:
        state.best_valid_bound, state.best_samples, state.evaluations_since_best = valid, metrics.samples, 0
        return True
    state.evaluations_since_best += 1
    return False


def should_stop_early(state: TrainingState, early_stopping: int | None) -> bool:
    """Whether ``early_stopping`` evaluation points in a row have passed without a higher
    validation bound (never when ``early_stopping`` is None)."""
    return early_stopping is not None and state.evaluations_since_best >= early_stopping
