"""What a run writes besides its model and metrics: its figures."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import Dataset
from ..figures import save_bound_curve, save_manifold, save_reconstructions, save_samples
from ..models.conditional import model_inputs
from ..models.families import prior_icdf
from ..models.vae import VAE
from ..training import Metrics, evaluation_data


def write_figures(out: Path, model: VAE, data: Dataset, binarize: str, history: list[Metrics]) -> None:
    """The run's PNGs: samples, reconstructions, the bound curve and, for J = 2, the manifold."""
    title = f"{data.name}, Nz = {model.config.latent_dim}"
    save_bound_curve([m.to_dict() for m in history], out / "bound.png", title)
    shape = data.image_shape
    if shape is None:
        return
    generator = torch.Generator(device="cpu").manual_seed(0)
    if model.config.num_classes is not None:  # one row per class, the same z down each column
        save_samples(
            model.class_grid(10, generator=generator).cpu(),
            shape,
            out / "samples.png",
            columns=10,
            title=f"class-conditional samples (row = class), {title}",
        )
    else:
        save_samples(
            model.sample(100, generator=generator).cpu(), shape, out / "samples.png", title=f"samples, {title}"
        )
    shown = "valid" if data.valid.shape[0] else "test"  # a run trained on train + valid shows test images
    labels = getattr(data, f"{shown}_labels")
    inputs = evaluation_data(
        model_inputs(getattr(data, shown)[:50], None if labels is None else labels[:50], model.config), binarize
    )
    save_reconstructions(
        inputs[:, : model.config.data_dim], model.reconstruct(inputs), shape, out / "reconstructions.png"
    )
    icdf = prior_icdf(model.prior()) if model.config.prior != "gaussian" and model.config.latent_dim == 2 else None
    if (
        model.config.latent_dim == 2
        and model.config.num_classes is None
        and (model.config.prior == "gaussian" or icdf is not None)
    ):
        # A non-Gaussian prior maps the grid through its own inverse CDF (none: no manifold figure).
        save_manifold(model.decoder.mean, shape, out / "manifold.png", device=inputs.device, icdf=icdf)
