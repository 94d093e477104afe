"""The images a run's trackers get at each evaluation point: a grid of samples (decoder means of a
fixed, seeded set of z ~ p(z), so that the grids of successive points differ only by what the model
learned) and a grid of reconstructions (a fixed set of validation examples, or training examples
when there is no validation split, each above its reconstruction), laid out as the run's
samples.png and reconstructions.png are (:mod:`aevb.figures`).

One small forward pass per evaluation point, without gradients, on the model's device; the z are
drawn from their own seeded generator, so training's random stream is the same with or without a
tracker.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import Dataset
from ..figures import tile_images
from ..models.conditional import model_inputs
from ..models.vae import VAE
from ..training import evaluation_data

#: Samples in a grid (a conditional model's grid: this many columns per class, as in samples.png),
#: reconstructions in a grid, and the images in each row of either.
SAMPLE_COUNT = 100
RECONSTRUCTION_COUNT = 50
COLUMNS = 10

#: The seed of the sample grids' z: samples.png's, so the last point's grid shows its images.
SAMPLE_SEED = 0


def image_grid(rows: torch.Tensor | np.ndarray, image_shape: tuple[int, ...], columns: int) -> np.ndarray:
    """Rows of flattened images (N, D), values in [0, 1], tiled as the run's figures tile them
    (:func:`aevb.figures.tile_images`), as an 8-bit image (H', W', C) that trackers take: C = 1
    for grey images (``image_shape`` (H, W)), C channels for colour ones ((C, H, W))."""
    canvas = tile_images(rows, image_shape, columns)
    if canvas.ndim == 2:
        canvas = canvas[..., None]
    return np.round(np.clip(canvas, 0.0, 1.0) * 255).astype(np.uint8)


def interleave_rows(inputs: torch.Tensor, outputs: torch.Tensor, columns: int) -> torch.Tensor:
    """``columns`` inputs, then their ``columns`` outputs, then the next inputs, ...: (2N, D) for
    inputs and outputs (N, D), so that a grid of ``columns`` columns shows each input above its
    output (reconstructions.png's layout)."""
    rows = []
    for start in range(0, inputs.shape[0], columns):
        rows += [inputs[start : start + columns], outputs[start : start + columns]]
    return torch.cat(rows)


class TrackerImages:
    """The sample and reconstruction grids of ``model`` in training on ``data``: calling it gives
    ``{"samples": grid, "reconstructions": grid}``, 8-bit images (H', W', C) from
    :func:`image_grid`. Build it with :meth:`of_run`, which says when the data are not images."""

    def __init__(self, model: VAE, data: Dataset, binarize: str):
        self.model, self.image_shape = model, tuple(data.image_shape)
        # Validation examples show what the model makes of data it does not train on; a run that
        # trains on train + valid shows training examples.
        split = "valid" if data.valid.shape[0] else "train"
        labels = getattr(data, f"{split}_labels")
        shown = getattr(data, split)[:RECONSTRUCTION_COUNT]
        # The fixed inputs, as the model is scored on them (one fixed binarisation, if dynamic).
        self.inputs = evaluation_data(
            model_inputs(shown, None if labels is None else labels[:RECONSTRUCTION_COUNT], model.config), binarize
        )

    @classmethod
    def of_run(cls, model: VAE, data: Dataset, binarize: str) -> TrackerImages | None:
        """The grids of a run on ``data``; None when the data are not images (no ``image_shape``)."""
        return None if data.image_shape is None else cls(model, data, binarize)

    @torch.no_grad()
    def __call__(self) -> dict[str, np.ndarray]:
        """The grids of the model as it is now: {"samples": (H', W', C) uint8, "reconstructions": ...}."""
        generator = torch.Generator(device="cpu").manual_seed(SAMPLE_SEED)  # the same z at every point
        class_grid = getattr(self.model, "class_grid", None)  # a conditional model: a row per class
        samples = class_grid(COLUMNS, generator=generator) if class_grid else self.model.sample(SAMPLE_COUNT, generator)
        data_dim = self.model.config.data_dim
        pairs = interleave_rows(self.inputs[:, :data_dim], self.model.reconstruct(self.inputs), COLUMNS)
        return {
            "samples": image_grid(samples, self.image_shape, COLUMNS),
            "reconstructions": image_grid(pairs, self.image_shape, COLUMNS),
        }
