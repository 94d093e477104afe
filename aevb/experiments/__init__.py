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
from ..runs import resolve_device
from . import fig2, fig3, manifolds, nll
from .runner import RunSpec, run_specs

FIGURES = ("fig2", "fig3", "fig4", "fig5", "samples", "nll")
PAPER_BUDGET = 10**8   # §5: training samples per curve in Figs. 2 and 3
#: Training samples per curve when none is named: minutes per curve on a laptop.
DEFAULT_BUDGET = 1_000_000


def plan(figure: str, budget: float, data_dir: str | None, seed: int = 0, **options) -> list[RunSpec]:
    """The runs behind ``figure``; ``options`` narrow them (datasets, latent_dims, methods, ...);
    an option left out or None takes the figure's own default. ``budget``: training samples per
    run; for ``nll`` also a fraction (<= 1) of each schedule."""
    def given(*names: str) -> dict:
        return {name: options[name] for name in names if options.get(name) is not None}

    if figure == "nll":
        device = options.get("device", "auto")
        models = options.get("models") or nll.default_models(resolve_device(device).type == "cuda")
        return nll.specs(budget, data_dir, models=models, seed=seed, device=device, **given("k", "points"))
    budget = whole_budget(budget)
    if figure == "fig2":
        return fig2.specs(budget, data_dir, seed=seed, **given("datasets", "latent_dims", "methods"))
    if figure == "fig3":
        return fig3.specs(budget, data_dir, seed=seed, **given("train_sizes", "methods", "points", "mcem_step_size"))
    if figure in manifolds.MANIFOLD_DATASETS:
        return manifolds.manifold_specs(figure, budget, data_dir, seed)
    if figure == "samples":
        return manifolds.sample_specs(budget, data_dir, seed, **given("latent_dims"))
    raise ValueError(figure)


def whole_budget(budget: float) -> int:
    """A figure's budget: a whole number of training samples per curve."""
    if not (budget >= 1 and budget == int(budget)):
        raise AevbError(f"budget must be a whole number of training samples per curve, got {budget:g}")
    return int(budget)


def reproduce(figure: str, out: str | Path | None = None, budget: float = DEFAULT_BUDGET, data_dir: str | None = None,
              *, jobs: int = 1, device: str = "auto", seed: int = 0, download: bool = False, progress: bool = False,
              threads: int | None = None, **options) -> list[Path]:
    """Train what ``figure`` needs into ``out`` (default reproduce/FIGURE; complete runs are
    skipped) and draw it; ``jobs`` runs at a time, ``threads`` fixing each one's CPU threads
    (default: adaptive, :mod:`aevb.threads`)."""
    out = Path(out if out is not None else f"reproduce/{figure}")
    runs = plan(figure, budget, data_dir, seed, device=device, **options)
    if download:   # missing data files are fetched (checksums verified) by every run that needs them
        runs = [dataclasses.replace(run, data=dataclasses.replace(run.data, download=True)) for run in runs]
    run_specs(runs, out, jobs=jobs, device=device, progress=progress, threads=threads)
    if figure == "nll":
        return nll.write_outputs(runs, out, budget)
    if figure == "fig2":
        return fig2.write_outputs(runs, out, budget)
    if figure == "fig3":
        return fig3.write_outputs(runs, out, budget)
    if figure in manifolds.MANIFOLD_DATASETS:
        return manifolds.draw_manifold(figure, out)
    return manifolds.draw_samples(runs, out)


__all__ = ["FIGURES", "PAPER_BUDGET", "plan", "reproduce"]
