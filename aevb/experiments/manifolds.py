"""Figures 4 and 5 (Appendix A): learned 2-D manifolds of Frey Face and MNIST, and Figures 7–11:
random samples from MNIST models with Nz = 2, 5, 10, 20.

Each trains the paper's model (AEVB, §5 settings) with the given budget, then draws from it: the
manifold as decoder means over Φ⁻¹ of a linearly spaced grid on the unit square; the samples as
decoder means E[x|z] for z ~ N(0, I).
"""

from __future__ import annotations

import json

import torch

from ..checkpoint import load_model
from ..figures import save_image_panels, save_manifold, tile_images
from ..runs import DataConfig, ModelSpec
from ..training import TrainConfig
from .registry import Experiment
from .runner import FigureRun, read_summary

MANIFOLD_DATASETS = {"fig4": "frey", "fig5": "mnist"}
DATASET_TITLES = {"frey": "Frey Face", "mnist": "MNIST"}
SAMPLE_LATENT_DIMS = (2, 5, 10, 20)  # Figs. 7–11 (MNIST)


def manifold_specs(figure: str, budget: int, data_dir: str | None, seed: int = 0) -> list[FigureRun]:
    dataset = MANIFOLD_DATASETS[figure]
    return [
        FigureRun(
            name=f"{dataset}-z2-aevb",
            data=DataConfig(dataset, data_dir),
            model=ModelSpec(latent_dim=2),
            train=TrainConfig(max_samples=budget, seed=seed, evals_per_decade=4),
            tags={"dataset": dataset, "latent_dim": 2, "method": "aevb"},
        )
    ]


def draw_manifold(figure: str, out, grid_size: int = 20):
    """The manifold of the run behind ``figure`` (fig4: Frey Face, fig5: MNIST) as one image."""
    dataset = MANIFOLD_DATASETS[figure]
    model = load_model(out / f"{dataset}-z2-aevb")
    name = DATASET_TITLES[dataset]
    path = save_manifold(
        model.decoder.mean,
        model.config.image_shape,
        out / f"{figure}.png",
        grid_size,
        title=f"Figure {figure[-1]} reproduced: learned {name} manifold, $N_z = 2$",
    )
    quantiles = [(i + 0.5) / grid_size for i in range(grid_size)]
    numbers = {
        "figure": figure,
        "run": _run_numbers(out / f"{dataset}-z2-aevb"),
        "grid_quantiles": quantiles,
        "grid_z": torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(quantiles)).tolist(),
    }
    return [path, _write_json(out / f"{figure}.json", numbers)]


def _run_numbers(run_dir) -> dict:
    """The final numbers of a run behind a figure (from its summary.json)."""
    summary = read_summary(run_dir)
    return {
        key: summary.get(key)
        for key in ("samples", "train_bound", "valid_bound", "test_bound", "step_size", "training_seconds")
    }


def _write_json(path, value):
    path.write_text(json.dumps(value, indent=2) + "\n")
    return path


def sample_specs(budget: int, data_dir: str | None, seed: int = 0, latent_dims=SAMPLE_LATENT_DIMS) -> list[FigureRun]:
    return [
        FigureRun(
            name=f"mnist-z{nz}-aevb",
            data=DataConfig("mnist", data_dir),
            model=ModelSpec(latent_dim=nz),
            train=TrainConfig(max_samples=budget, seed=seed, evals_per_decade=4),
            tags={"dataset": "mnist", "latent_dim": nz, "method": "aevb"},
        )
        for nz in latent_dims
    ]


def draw_samples(run_specs: list[FigureRun], out, count: int = 100, seed: int = 0):
    """One panel of ``count`` random samples per latent dimension, like Figures 7–11."""
    canvases = []
    for spec in run_specs:
        model = load_model(out / spec.name)
        images = model.sample(count, generator=torch.Generator().manual_seed(seed))
        canvases.append(tile_images(images, model.config.image_shape, int(count**0.5)))
    path = save_image_panels(
        canvases,
        out / "samples.png",
        labels=[f"{spec.tags['latent_dim']}-D latent space" for spec in run_specs],
        title="Figures 7–11 reproduced: random samples from MNIST models",
    )
    numbers = {spec.name: _run_numbers(out / spec.name) | {"latent_dim": spec.tags["latent_dim"]} for spec in run_specs}
    return [path, _write_json(out / "samples.json", numbers)]


def _manifold_experiment(figure: str) -> Experiment:
    name = DATASET_TITLES[MANIFOLD_DATASETS[figure]]
    return Experiment(
        figure,
        f"{name} 2-D manifold",
        lambda budget, data_dir, seed=0: manifold_specs(figure, budget, data_dir, seed),
        lambda run_specs, out, budget: draw_manifold(figure, out),
    )


FIGURE_4, FIGURE_5 = _manifold_experiment("fig4"), _manifold_experiment("fig5")
SAMPLES = Experiment(
    "samples",
    "Figs. 7-11, random samples for Nz = 2, 5, 10, 20",
    sample_specs,
    lambda run_specs, out, budget: draw_samples(run_specs, out),
    options=("latent_dims",),
)
