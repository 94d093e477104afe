"""What a training run tells its user while it goes on: the progress bar and the warnings about a
run that continues (rollbacks; a bound worse than the untrained model's)."""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager

from ..errors import TrainingDiverged
from ..progress import progress_bar
from .config import Metrics


class TrainingWarning(RuntimeWarning):
    """Something a user should know about a run that still goes on (a rollback, a bound that
    never improved)."""


# Each rollback is news, also when its text repeats one of an earlier run in this process
# (Python's default filter shows a warning once per text and place). Appended, so that a
# user's own filters still win.
warnings.filterwarnings("always", category=TrainingWarning, append=True)


@contextmanager
def one_line_warnings(run: str | None = None):
    """Warnings shown as a user reads them, "aevb: warning: ..." (with the ``run``'s name where
    several train at once, e.g. in the processes of ``aevb reproduce --jobs``), not as Python's
    source lines."""

    def formatted(message, category, filename, lineno, line=None) -> str:
        text = str(message)
        if not text.startswith("aevb"):
            text = f"aevb: warning: {run + ': ' if run else ''}{text}"
        return text + "\n"

    previous = warnings.formatwarning
    warnings.formatwarning = formatted
    try:
        yield
    finally:
        warnings.formatwarning = previous


#: A run that ends this far below its untrained model's bound learned nothing.
UNTRAINED_MARGIN_NATS = 1.0


def warn_if_worse_than_untrained(history: list[Metrics], initial_bound: float | None, step_size: float) -> None:
    """A run that ends with a lower training bound than its untrained model had learned nothing
    (e.g. a step size so large that every step overshoots): say so instead of reporting success."""
    if not history or initial_bound is None or not math.isfinite(initial_bound):
        return
    final = history[-1].train_bound
    # A margin of a nat: the two are measured on different points, and a run too short to learn
    # much is not a failure.
    if final is not None and math.isfinite(final) and final < initial_bound - UNTRAINED_MARGIN_NATS:
        warnings.warn(
            f"the training bound ended at {final:.4g} nats, below the untrained model's {initial_bound:.4g}: "
            f"the run learned nothing; try a smaller step size than {step_size:g}",
            TrainingWarning,
            stacklevel=3,
        )


def training_bar(total: int, initial: int, enabled: bool):
    """The training bar: samples seen of ``total``, time left, and — in its postfix, set at each
    evaluation point — the bound and the training throughput (tqdm's own rate, which counts the
    evaluations too, is left out: one throughput figure)."""
    return progress_bar(total, unit="sample", desc="training", enabled=enabled, initial=initial, rate=False)


#: Data values beyond this magnitude are the likeliest cause of an untrained model whose bound is
#: already non-finite: a Gaussian decoder squares them, and float32 overflows near 1.8e19 squared.
LARGE_DATA_VALUE = 1e6

#: A normal initialisation wider than this saturates every tanh and makes the outputs overflow.
LARGE_INIT_STD = 1.0


def untrainable_cause(model, data, data_name: str | None = None) -> str:
    """Why an untrained model's bound is already non-finite on ``data`` (no step size can help):
    data values too large, an initialisation too wide, or, where neither shows, the model and data
    in general; with what to do about it."""
    causes = []
    largest = data.abs().max().item() if data.numel() else 0.0
    if largest > LARGE_DATA_VALUE:
        named = f" ({data_name})" if data_name else ""
        causes.append(
            f"the training data{named} reach {largest:.3g} in magnitude: rescale them (to [0, 1] or unit variance)"
        )
    config = getattr(model, "config", None)
    if getattr(config, "init", None) in ("normal", "anglepy") and getattr(config, "init_std", 0.0) > LARGE_INIT_STD:
        causes.append(
            f"`init_std` {config.init_std:g} makes the untrained model's outputs overflow: use a smaller "
            "`init_std` (or `init` glorot)"
        )
    if not causes:
        causes.append("check the data and the model's settings")
    return "; ".join(causes)


def refuse_untrainable(initial_bound: float | None, model, data, data_name: str | None = None) -> None:
    """Stop a run whose untrained model's bound is already non-finite, before any step (no step
    size can help), with :func:`untrainable_cause`."""
    if initial_bound is not None and not math.isfinite(initial_bound):
        raise TrainingDiverged(
            f"training cannot start: the untrained model's bound is already {initial_bound} on "
            f"the first training points; {untrainable_cause(model, data, data_name)}"
        )
