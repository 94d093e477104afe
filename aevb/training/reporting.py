"""What a training run tells its user while it goes on: the progress bar and the warnings about a
run that continues (rollbacks; a bound worse than the untrained model's)."""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager

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
        warnings.warn(f"the training bound ended at {final:.4g} nats, below the untrained model's {initial_bound:.4g}: "
                      f"the run learned nothing; try a smaller step size than {step_size:g}", TrainingWarning,
                      stacklevel=3)


def training_bar(total: int, initial: int, enabled: bool):
    """The training bar: samples seen of ``total``, time left, and — in its postfix, set at each
    evaluation point — the bound and the training throughput (tqdm's own rate, which counts the
    evaluations too, is left out: one throughput figure)."""
    return progress_bar(total, unit="sample", desc="training", enabled=enabled, initial=initial, rate=False)
