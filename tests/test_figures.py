"""Tests of aevb.figures: every figure is written, and degenerate inputs (one evaluation point, a
constant or missing bound, constant images) give no matplotlib warning for the user to puzzle over."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from aevb import figures
from aevb.figures import save_bound_comparison, save_bound_curve, save_manifold, save_reconstructions, save_samples

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def point(samples, train_bound, valid_bound=None) -> dict:
    """One evaluation point, with the keys of aevb.training.Metrics that the figure may read."""
    return dict(
        epoch=samples / 1000,
        samples=samples,
        train_bound=train_bound,
        valid_bound=valid_bound,
        minibatch_bound=train_bound,
        test_bound=None,
    )


def write_without_warnings(draw, path):
    """``draw(path)`` must write a PNG and emit no warning at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert draw(path) == path
    assert path.read_bytes().startswith(PNG_MAGIC)


NAN = math.nan
DEGENERATE_HISTORIES = {
    "one point": [point(1000, -120.0, -121.0)],
    "one point, no validation": [point(1000, -120.0)],
    "constant bound": [point(s, -95.0, -95.0) for s in (1000, 10_000, 100_000)],
    "one point, huge bound": [point(1000, -1e12)],  # a diverged run: ±1e-6 padding vanished in rounding
    "constant huge bound": [point(s, -3e15, -3e15) for s in (1000, 10_000)],
    "no bound (NaN)": [point(s, NAN, NAN) for s in (1000, 10_000)],
    "one NaN point": [point(1000, NAN)],
    "infinite bounds": [point(s, -math.inf, math.inf) for s in (1000, 10_000)],
    "bound beyond plotting": [point(1000, -1e308), point(10_000, 1e308)],
    "evaluated before training": [point(0, -540.0, -541.0)],  # nothing positive on the log axis
    "zero samples then one point": [point(0, -540.0), point(1000, -200.0)],
    "same samples twice": [point(1000, -200.0), point(1000, -190.0)],
    "empty": [],
}


@pytest.mark.parametrize("case", DEGENERATE_HISTORIES)
def test_bound_curve_of_a_degenerate_history_gives_no_warning(tmp_path, case):
    write_without_warnings(
        lambda path: save_bound_curve(DEGENERATE_HISTORIES[case], path, title=case), tmp_path / "bound.png"
    )


def test_bound_curve_of_an_ordinary_history(tmp_path):
    history = [point(s, -100 - 4e3 / s**0.5, -102 - 4e3 / s**0.5) for s in (100, 1000, 10_000, 100_000)]
    history[1]["valid_bound"] = None  # validation skipped at one point
    write_without_warnings(lambda path: save_bound_curve(history, path), tmp_path / "bound.png")


def test_a_comparison_draws_the_splits_the_runs_evaluated_and_says_which_style_is_which(tmp_path, monkeypatch):
    """Protocol runs (no validation split, a test bound at every point) get solid training and
    dotted test curves; runs with validation, dashed ones. One legend entry per run."""
    drawn = []
    monkeypatch.setattr(figures.plt, "close", lambda figure: drawn.append(figure))
    samples = (1000, 10_000, 100_000)
    protocol = [dict(point(s, -100 - 4e3 / s**0.5), test_bound=-101 - 4e3 / s**0.5) for s in samples]
    split = [point(s, -99 - 4e3 / s**0.5, -100 - 4e3 / s**0.5) for s in samples]
    for runs, styles, title in (
        ([("vae", protocol)], ["-", ":"], "solid: training, dotted: test"),
        (
            [("vae", protocol), ("paper", split)],
            ["-", ":", "-", "--"],
            "solid: training, dashed: validation, dotted: test",
        ),
        ([("paper", split)], ["-", "--"], "solid: training, dashed: validation"),
    ):
        write_without_warnings(lambda path: save_bound_comparison(runs, path), tmp_path / "compare.png")
        axes = drawn.pop().axes[0]
        assert [line.get_linestyle() for line in axes.get_lines()] == styles
        assert axes.get_title() == title
        assert [text.get_text() for text in axes.get_legend().get_texts()] == [label for label, _ in runs]


CONSTANT_IMAGES = {"zeros": 0.0, "ones": 1.0, "grey": 0.5, "NaN": NAN, "inf": math.inf}


@pytest.mark.parametrize("value", CONSTANT_IMAGES)
def test_image_grids_of_constant_images_give_no_warning(tmp_path, value):
    fill = CONSTANT_IMAGES[value]
    images = torch.full((6, 12), fill)
    write_without_warnings(
        lambda path: save_samples(images, (3, 4), path, columns=4, title=value), tmp_path / "samples.png"
    )
    write_without_warnings(
        lambda path: save_reconstructions(images, images, (3, 4), path, columns=4), tmp_path / "reconstructions.png"
    )
    write_without_warnings(
        lambda path: save_manifold(lambda z: torch.full((z.shape[0], 12), fill), (3, 4), path, grid_size=3),
        tmp_path / "manifold.png",
    )
    write_without_warnings(lambda path: save_samples(images[:1], (3, 4), path), tmp_path / "one.png")


def test_image_panels_draw_every_pixel_as_a_whole_block_of_screen_pixels(tmp_path):
    import matplotlib.image
    import numpy as np

    generator = np.random.default_rng(0)
    canvases = [generator.random((30, 40)), generator.random((20, 25))]
    path = figures.save_image_panels(canvases, tmp_path / "panels.png", labels=["a", "b"], title="t", gap=20)
    drawn = matplotlib.image.imread(path)[..., 0]  # grey: red = green = blue
    scale = math.ceil(figures.IMAGE_MIN_SIDE / 40)  # 5 screen pixels per canvas pixel
    assert drawn.shape[1] == (40 + 25) * scale + 20
    left = 0
    for canvas in canvases:
        height, width = canvas.shape
        block = drawn[drawn.shape[0] - height * scale :, left : left + width * scale]  # panels sit at the bottom
        for row in range(scale):
            for column in range(scale):  # the colour map has 256 levels, a step of up to 2/255
                assert np.abs(block[row::scale, column::scale] - canvas).max() <= 2 / 255
        left += width * scale + 20
