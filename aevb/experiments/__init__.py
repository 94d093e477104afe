"""Reproducing the paper's experiments, one command per figure (``aevb reproduce FIGURE``).

* ``fig2`` — lower bound vs training samples, AEVB vs wake-sleep (:mod:`.fig2`);
* ``fig3`` — marginal likelihood vs training samples, AEVB vs wake-sleep vs MCEM (:mod:`.fig3`);
* ``fig4``, ``fig5`` — learned 2-D manifolds of Frey Face and MNIST (:mod:`.manifolds`);
* ``samples`` — random MNIST samples for Nz = 2, 5, 10, 20, Figs. 7–11 (:mod:`.manifolds`);
* ``nll`` — not a figure of the paper: test log p(x) on dynamically binarised MNIST with the IWAE
  paper's protocol, the number later work reports (:mod:`.nll`).

Each trains its runs into ``OUT/<run>/`` (resumable: complete runs are kept), then writes the
figure as PNG and the numbers behind it as CSV/JSON into ``OUT``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import AevbError
from ..runs.layout import refuse_a_file
from . import fig2, fig3, manifolds, nll
from .registry import Experiment, whole_budget
from .runner import FigureRun, run_specs

#: The experiments by name, in the order the command line lists them.
EXPERIMENTS: dict[str, Experiment] = {
    experiment.name: experiment
    for experiment in (
        fig2.EXPERIMENT,
        fig3.EXPERIMENT,
        manifolds.FIGURE_4,
        manifolds.FIGURE_5,
        manifolds.SAMPLES,
        nll.EXPERIMENT,
    )
}
FIGURES = tuple(EXPERIMENTS)
PAPER_BUDGET = 10**8  # §5: training samples per curve in Figs. 2 and 3
#: Training samples per curve when none is named: minutes per curve on a laptop.
DEFAULT_BUDGET = 1_000_000


def get_experiment(figure: str) -> Experiment:
    """The experiment called ``figure`` (a key of :data:`EXPERIMENTS`)."""
    try:
        return EXPERIMENTS[figure]
    except KeyError:
        raise AevbError(f"unknown figure {figure!r}; choose one of {', '.join(EXPERIMENTS)}") from None


def plan(
    figure: str, budget: float, data_dir: str | None, seed: int = 0, device: str = "auto", **options
) -> list[FigureRun]:
    """The runs behind ``figure``; ``options`` narrow them (datasets, latent_dims, methods, ...);
    an option left out or None takes the figure's own default, and one the figure does not take is
    an error. ``budget``: training samples per run; for ``nll`` also a fraction (<= 1) of each
    schedule."""
    return get_experiment(figure).plan(budget, data_dir, seed, device, **options)


def reproduce(
    figure: str,
    out: str | Path | None = None,
    budget: float = DEFAULT_BUDGET,
    data_dir: str | None = None,
    *,
    jobs: int = 1,
    device: str = "auto",
    seed: int = 0,
    download: bool = False,
    progress: bool = False,
    threads: int | None = None,
    command: str | None = None,
    **options,
) -> list[Path]:
    """Train what ``figure`` needs into ``out`` (default reproduce/FIGURE; complete runs are
    skipped) and draw it; ``jobs`` runs at a time, ``threads`` fixing each one's CPU threads
    (default: adaptive, :mod:`aevb.threads`). ``command``: the command line, recorded in each
    run's config.json with the run's name (default: ``aevb reproduce (RUN)``)."""
    experiment = get_experiment(figure)
    out = Path(out if out is not None else f"reproduce/{figure}")
    refuse_a_file(out)  # before any run is planned or trained
    runs = experiment.plan(budget, data_dir, seed, device, **options)
    if download:  # missing data files are fetched (checksums verified) by every run that needs them
        runs = [dataclasses.replace(run, data=dataclasses.replace(run.data, download=True)) for run in runs]
    if command is not None:
        runs = [dataclasses.replace(run, command=f"{command}  # run {run.name}") for run in runs]
    run_specs(runs, out, jobs=jobs, device=device, progress=progress, threads=threads)
    return experiment.write(runs, out, budget)


__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "FIGURES",
    "PAPER_BUDGET",
    "get_experiment",
    "plan",
    "reproduce",
    "whole_budget",
]
