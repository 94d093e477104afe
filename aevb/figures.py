"""Figures of a run, drawn like the paper's: sample grids (Figs. 7–11), reconstructions, the bound
against training samples (Fig. 2), and the learned 2-D manifold (Figs. 4–5).

All functions write a PNG and return its path; they use matplotlib's non-interactive Agg backend.
Images are rows of D values with an image shape (:mod:`aevb.image_shape`): (H, W) draws grey,
(3, H, W) draws RGB and (4, H, W) RGBA over the white page.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.distributions import Normal  # noqa: E402

from .image_shape import image_channels, image_size  # noqa: E402


def tile_images(
    images: np.ndarray | torch.Tensor, image_shape: tuple[int, ...], columns: int, padding: int = 1
) -> np.ndarray:
    """Arrange (N, D) images row by row into one canvas, white between them: (rows·(H+p)−p,
    columns·(W+p)−p) for grey images (``image_shape`` (H, W)), with a last axis of C channels for
    colour ones (``image_shape`` (C, H, W), rows flattened channels first), as imshow takes it."""
    images = np.asarray(images.detach().cpu() if isinstance(images, torch.Tensor) else images, dtype=np.float32)
    height, width = image_size(image_shape)
    channels = image_channels(image_shape)
    count = images.shape[0]
    rows = -(-count // columns)
    pages = (channels,) if channels > 1 else ()
    canvas = np.ones((rows * (height + padding) - padding, columns * (width + padding) - padding, *pages), np.float32)
    # (N, C, H, W) → (N, H, W, C): the channel axis last, where imshow reads colour
    tiles = images.reshape(count, channels, height, width).transpose(0, 2, 3, 1).reshape(count, height, width, *pages)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = row * (height + padding), column * (width + padding)
        canvas[top : top + height, left : left + width] = tiles[index]
    return canvas


#: Screen pixels per inch of the image figures, and the fewest screen pixels an image figure's
#: longer side gets.
IMAGE_DPI = 100
IMAGE_MIN_SIDE = 200


def save_image_panels(
    canvases: Sequence[np.ndarray],
    path: str | Path,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    gap: int = 20,
) -> Path:
    """Save canvases (each (H, W) grey or (H, W, C) colour, values in [0, 1]) side by side, ``gap`` screen pixels
    apart, each under its label and all under ``title``. Every canvas pixel is drawn as an s×s
    block of screen pixels, s a whole number (2 or more; more for small canvases): at a scale
    that is not a whole number, some rows and columns of every digit or face would be doubled and
    others not, which reads as speckle."""
    scale = max(2, math.ceil(IMAGE_MIN_SIDE / max(max(canvas.shape[:2]) for canvas in canvases)))
    sizes = [(canvas.shape[0] * scale, canvas.shape[1] * scale) for canvas in canvases]  # screen pixels
    label_height, title_height = (20 if labels else 0), (30 if title else 0)
    width = sum(w for _, w in sizes) + gap * (len(canvases) - 1)
    height = max(h for h, _ in sizes) + label_height + title_height
    figure = plt.figure(figsize=(width / IMAGE_DPI, height / IMAGE_DPI))
    left = 0
    for index, (canvas, (h, w)) in enumerate(zip(canvases, sizes)):
        axes = figure.add_axes([left / width, 0, w / width, h / height])
        if canvas.ndim == 3:  # RGB(A): imshow reads the colour from the last axis
            axes.imshow(np.clip(canvas, 0, 1), interpolation="nearest")
        else:
            axes.imshow(np.clip(canvas, 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes.set_axis_off()
        if labels:
            axes.set_title(labels[index], fontsize=9, pad=4)
        left += w + gap
    if title:
        figure.suptitle(title, fontsize=9, y=1 - 4 / height, va="top")
    figure.savefig(path, dpi=IMAGE_DPI)
    plt.close(figure)
    return Path(path)


def save_samples(
    images: torch.Tensor, image_shape: tuple[int, ...], path: str | Path, columns: int = 10, title: str | None = None
) -> Path:
    """A grid of generated images (N, D), like the paper's Figures 7–11."""
    return save_image_panels([tile_images(images, image_shape, columns)], path, title=title)


def save_reconstructions(
    inputs: torch.Tensor,
    reconstructions: torch.Tensor,
    image_shape: tuple[int, ...],
    path: str | Path,
    columns: int = 10,
) -> Path:
    """Inputs (odd rows) above their reconstructions E[x | z = μ(x)] (even rows)."""
    rows = []
    for start in range(0, inputs.shape[0], columns):
        rows += [inputs[start : start + columns], reconstructions[start : start + columns]]
    stacked = torch.cat([r.detach().cpu() for r in rows])
    return save_image_panels(
        [tile_images(stacked, image_shape, columns)], path, title="inputs (odd rows) and reconstructions (even rows)"
    )


@torch.no_grad()
def manifold_images(decoder_mean, grid_size: int = 20, device=None, icdf=None) -> torch.Tensor:
    """Decoder means over a 2-D latent grid (Figs. 4–5, App. A): (grid_size², D).

    A linearly spaced grid on the unit square (cell centres) is mapped through the inverse CDF of
    the Gaussian to z, so the grid covers the prior evenly in probability. Rows run from high z₂
    (top) to low z₂, columns from low z₁ (left) to high z₁. ``icdf``: the inverse CDF of another
    factorised prior's marginal (quantiles (G,) → z (G,)) instead of the Gaussian's.
    """
    quantiles = (torch.arange(grid_size, dtype=torch.float32, device=device) + 0.5) / grid_size
    values = Normal(0.0, 1.0).icdf(quantiles) if icdf is None else icdf(quantiles)
    z2, z1 = torch.meshgrid(values.flip(0), values, indexing="ij")
    return decoder_mean(torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1))


def save_manifold(
    decoder_mean,
    image_shape: tuple[int, ...],
    path: str | Path,
    grid_size: int = 20,
    device=None,
    icdf=None,
    title: str = "learned manifold: E[x|z] over Φ⁻¹ of a uniform grid",
) -> Path:
    """Draw the learned 2-D manifold like the paper's Figures 4 and 5 (``icdf``: see manifold_images)."""
    images = manifold_images(decoder_mean, grid_size, device, icdf)
    return save_image_panels([tile_images(images, image_shape, grid_size, padding=0)], path, title=title)


def save_bound_curve(history: Sequence[dict], path: str | Path, title: str | None = None) -> Path:
    """Lower bound per datapoint (nats) against training samples seen, log x-axis (like Fig. 2).

    Degenerate histories (one evaluation point, a constant bound, no finite bound at all, points
    at zero samples) still give a figure, with limits chosen here rather than by matplotlib,
    which would warn about a singular or non-positive range.
    """
    figure, axes = plt.subplots(figsize=(5, 3.6))
    train = _curve_points(history, "train_bound")
    valid = _curve_points(history, "valid_bound")
    for points, style, label in ((train, "-", "train"), (valid, "--", "validation")):
        finite_count = sum(np.isfinite(bound) for _, bound in points)
        if finite_count:  # a lone point draws no line segment, so it gets a marker
            axes.plot(*zip(*points), style, color="tab:red", label=label, marker="o" if finite_count == 1 else None)
    axes.set_xscale("log")
    axes.set_xlabel("# training samples evaluated")
    axes.set_ylabel("lower bound per datapoint (nats)")
    if title:
        axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3, which="both")
    finite = [bound for _, bound in train + valid if np.isfinite(bound)]
    if finite:
        axes.legend()
    else:
        axes.text(0.5, 0.5, "no finite bound to plot", transform=axes.transAxes, ha="center", va="center")
    axes.set_xlim(*_samples_range([samples for samples, _ in train + valid]))
    axes.set_ylim(*_bound_range(finite))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


#: The splits a comparison figure draws, each in its own line style: (metrics key, style, name).
COMPARISON_SPLITS = (("train_bound", "-", "training"), ("valid_bound", "--", "validation"), ("test_bound", ":", "test"))
_STYLE_NAMES = {"-": "solid", "--": "dashed", ":": "dotted"}


def save_bound_comparison(
    runs: Sequence[tuple[str, Sequence[dict]]], path: str | Path, title: str | None = None
) -> Path:
    """Several runs' bound curves on one log x-axis: per run (label, metrics history) one colour,
    training solid, validation dashed and test dotted (the splits some run evaluated); nats per
    datapoint against training samples."""
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    finite, samples, drawn = [], [], []
    colours = plt.get_cmap("tab10")
    for index, (label, history) in enumerate(runs):
        colour, labelled = colours(index % 10), False
        for key, style, split in COMPARISON_SPLITS:
            points = _curve_points(history, key)
            count = sum(np.isfinite(bound) for _, bound in points)
            if count:  # one legend entry per run; the line style says the split
                axes.plot(
                    *zip(*points),
                    style,
                    color=colour,
                    marker="o" if count == 1 else None,
                    label=None if labelled else label,
                )
                labelled = True
                if split not in drawn:
                    drawn.append(split)
            finite += [bound for _, bound in points if np.isfinite(bound)]
            samples += [s for s, _ in points]
    axes.set_xscale("log")
    axes.set_xlabel("# training samples evaluated")
    axes.set_ylabel("lower bound per datapoint (nats)")
    styles = ", ".join(f"{_STYLE_NAMES[style]}: {split}" for _, style, split in COMPARISON_SPLITS if split in drawn)
    axes.set_title("\n".join(part for part in (title, styles) if part), fontsize=9)
    axes.grid(alpha=0.3, which="both")
    if finite:
        axes.legend(fontsize=7, loc="best")
    else:
        axes.text(0.5, 0.5, "no finite bound to plot", transform=axes.transAxes, ha="center", va="center")
    axes.set_xlim(*_samples_range(samples))
    axes.set_ylim(*_bound_range(finite))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def _curve_points(history: Sequence[dict], key: str) -> list[tuple[float, float]]:
    """(samples, bound) of the points a log x-axis can show; a bound that is not finite (or too
    large to plot) becomes NaN, a gap in the line, so a diverged or bound-less evaluation neither
    hides nor stretches the rest."""
    points = []
    for entry in history:
        samples, bound = entry.get("samples"), entry.get(key)
        if samples is None or bound is None or not 0 < samples <= _LARGEST_AXIS_VALUE:
            continue
        points.append((float(samples), float(bound) if abs(bound) <= _LARGEST_AXIS_VALUE else np.nan))
    return points


# Values beyond this (a diverged bound) are left out: far enough below the largest float (1.8e308)
# that the margins below and matplotlib's tick spacing cannot overflow.
_LARGEST_AXIS_VALUE = 1e300


def _samples_range(samples: list[float]) -> tuple[float, float]:
    """Log x-axis limits around ``samples`` (all positive and finite)."""
    if not samples:
        return 1.0, 10.0  # nothing to show: one decade keeps the log axis valid
    low, high = min(samples), max(samples)
    if low == high:  # one evaluation point: half a decade either side
        return low / np.sqrt(10), high * np.sqrt(10)
    margin = (high / low) ** 0.05  # matplotlib's own default: 5% of the (log) span each side
    return low / margin, high * margin


# A constant bound or a single point still gets a band this wide (in nats, and relative to the
# bound's size, so that it stays far above float rounding when the bound is huge).
_MIN_BOUND_BAND = 1.0
_MIN_RELATIVE_BOUND_BAND = 1e-6


def _bound_range(finite: list[float]) -> tuple[float, float]:
    """y-axis limits for the finite bounds: from the best one down past the 10th percentile, so the
    early, very negative points do not flatten the interesting part."""
    if not finite:
        return -1.0, 1.0
    top = max(finite)
    spread = top - float(np.percentile(finite, 10))
    low, high = top - 1.3 * spread, top + 0.1 * spread
    band = max(_MIN_BOUND_BAND, _MIN_RELATIVE_BOUND_BAND * abs(top))
    if high - low < band:
        middle = (low + high) / 2
        low, high = middle - band / 2, middle + band / 2
    return low, high
