"""What an experiment of ``aevb reproduce`` is: the runs it needs and what it draws from them.

Each figure module defines its :class:`Experiment`; :data:`aevb.experiments.EXPERIMENTS` holds
them by name, so the command line, :func:`aevb.experiments.plan` and
:func:`aevb.experiments.reproduce` ask the experiment instead of matching names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import AevbError
from .runner import FigureRun


@dataclass(frozen=True)
class Experiment:
    """``specs(budget, data_dir, seed=..., **options)`` → the runs; ``write(runs, out, budget)``
    → the files drawn from the complete runs in ``out``. ``options`` names the settings that
    narrow or change the runs (``specs`` takes them as keywords, with its own defaults);
    ``fractional_budget``: a budget ≤ 1 is a share of each run's schedule rather than a number of
    training samples; ``takes_device``: ``specs`` takes the device (to choose its defaults)."""

    name: str
    summary: str
    specs: Callable[..., list[FigureRun]]
    write: Callable[[list[FigureRun], Path, float], list[Path]]
    options: tuple[str, ...] = ()
    fractional_budget: bool = False
    takes_device: bool = False

    def plan(
        self, budget: float, data_dir: str | None, seed: int = 0, device: str = "auto", **options
    ) -> list[FigureRun]:
        """The runs for ``budget`` (training samples per run); ``options`` left out or None take
        the experiment's defaults, and one it does not take is a one-line error."""
        # a value listed twice (``--latent-dims 2 2``) would train the same run twice, or at once
        given = {
            name: tuple(dict.fromkeys(value)) if isinstance(value, (list, tuple)) else value
            for name, value in options.items()
            if value is not None
        }
        foreign = [name for name in given if name not in self.options]
        if foreign:
            takes = ", ".join(f"`{name}`" for name in self.options) or "none"
            raise AevbError(f"{self.name} does not take `{foreign[0]}` (its options: {takes})")
        if not self.fractional_budget:
            budget = whole_budget(budget)
        if self.takes_device:
            given["device"] = device
        runs = self.specs(budget, data_dir, seed=seed, **given)
        names = [run.name for run in runs]
        if len(set(names)) != len(names):  # each run has a directory of its own
            raise AevbError(f"{self.name} planned two runs called {max(names, key=names.count)!r}")
        return runs


def whole_budget(budget: float) -> int:
    """A figure's budget: a whole number of training samples per curve."""
    if not (budget >= 1 and budget == int(budget)):
        raise AevbError(f"`budget` must be a whole number of training samples per curve, got {budget:g}")
    return int(budget)
