"""Images with their shape and channels (issue 30, item 1): :func:`aevb.data.image_features` for
every layout and dtype, folders of PNG/JPEG images (``aevb train --dataset DIR``) read to exactly
the arrays they were written from, and colour images trained with both architectures and drawn
in colour."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import METRICS_KEYS, call, read_metrics, run_cli
from test_memory import assert_one_line_error

from aevb.data import Dataset, image_features, load_dataset
from aevb.errors import AevbError
from aevb.figures import tile_images
from aevb.models.build import build_model
from aevb.models.buildable import parameter_count
from aevb.models.config import ModelConfig

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = ["--hidden-units", "16", "--latent-dim", "3", "--max-samples", "1500", "--no-progress"]
QUICK += ["--selection-steps", "3", "--seed", "7", "--optimizer", "adagrad"]  # (no warm-up: a short run moves)
TIMING_KEYS = {"seconds", "samples_per_second"}


def mnist_grey_levels(count: int) -> np.ndarray:
    """The first ``count`` training images of the embedded MNIST sample as their uint8 grey
    levels (N, 28, 28), recovered exactly from k / 255."""
    rows = load_dataset("mnist-sample", pixel_divisor=255).train[:count].numpy()
    levels = np.rint(rows * 255).astype(np.uint8)
    assert np.array_equal(levels.astype(np.float32) / np.float32(255), rows)
    return levels.reshape(count, 28, 28)


def coloured_mnist(count: int, seed: int = 0) -> np.ndarray:
    """Each MNIST digit tinted by a seeded random RGB colour: x_rgb = x[..., None] · colour,
    float32 (N, 28, 28, 3) in [0, 1], channels last."""
    grey = mnist_grey_levels(count).astype(np.float32) / 255
    colours = np.random.default_rng(seed).uniform(0.0, 1.0, size=(count, 1, 1, 3)).astype(np.float32)
    return grey[..., None] * colours


def write_pngs(folder: Path, images: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{index:04d}.png")


def png_channels(path: Path) -> np.ndarray:
    """The PNG's pixels as int (H, W, 3), its alpha (all opaque) left off."""
    pixels = np.asarray(Image.open(path).convert("RGBA")).astype(int)
    assert (pixels[..., 3] == 255).all()
    return pixels[..., :3]


# ------------------------------------------------------------------------------ image_features


def test_image_features_flattens_every_layout_channels_first():
    rng = np.random.default_rng(0)
    last = rng.integers(0, 256, size=(5, 8, 6, 3), dtype=np.uint8)  # (N, H, W, C)
    first = np.ascontiguousarray(last.transpose(0, 3, 1, 2))  # (N, C, H, W)
    rows, shape = image_features(last)
    assert shape == (3, 8, 6) and rows.dtype == np.float32 and rows.shape == (5, 144) and rows.flags.c_contiguous
    # Row n holds channel c's pixel (h, w) at c·H·W + h·W + w, divided by 255 (the user rule).
    n, c, h, w = 2, 1, 3, 5
    assert rows[n, c * 48 + h * 6 + w] == np.float32(last[n, h, w, c]) / np.float32(255)
    assert np.array_equal(image_features(first)[0], rows)
    assert np.array_equal(image_features(torch.from_numpy(last))[0], rows)  # a uint8 tensor, the same rule
    assert np.array_equal(image_features(last, pixel_divisor=256)[0] * 256, last.transpose(0, 3, 1, 2).reshape(5, -1))
    grey = last[..., 0]
    assert image_features(grey)[1] == (8, 6)
    assert image_features(grey[:, None])[1] == (8, 6)  # (N, 1, H, W) is grey
    assert image_features(grey.reshape(5, -1))[1] is None
    wide = torch.from_numpy(first.astype(np.float64) / 255)  # other dtypes: converted, not scaled
    assert np.allclose(image_features(wide)[0], rows) and image_features(wide)[0].dtype == np.float32
    assert np.array_equal(image_features(torch.ones(2, 3, dtype=torch.bfloat16))[0], np.ones((2, 3), np.float32))
    assert np.array_equal(image_features(np.eye(3, dtype=bool))[0], np.eye(3, dtype=np.float32))
    assert np.array_equal(image_features(np.full((2, 2), 300, np.int64))[0], np.full((2, 2), 300, np.float32))


def test_image_features_errors_are_one_line_and_say_what_to_do():
    cases = [
        (np.zeros((4, 3, 8, 3)), "channels_last"),  # channels first or last?
        (np.zeros((4, 5, 8, 7)), "neither 5 nor 7"),
        (np.zeros((4, 2, 8, 8)), "neither 2 nor 8"),
        (np.zeros(4), "expected (N, D)"),
        (np.zeros((0, 3)), "empty"),
        (np.array([[np.inf]]), "NaN or infinite"),
        (np.array([["a"]]), "non-numeric"),
        (torch.zeros(2, 2, dtype=torch.complex64), "complex"),
        ([[0.5]], "not a numpy array"),
    ]
    for array, words in cases:
        with pytest.raises(AevbError) as info:
            image_features(array, name="`train`")
        message = str(info.value)
        assert "\n" not in message and message.startswith("`train`") and words in message, message
    assert image_features(np.zeros((4, 3, 8, 3)), channels_last=True)[1] == (3, 3, 8)
    assert image_features(np.zeros((4, 3, 8, 3)), channels_last=False)[1] == (3, 8, 3)
    with pytest.raises(AevbError, match="`pixel_divisor` must be at least 255"):
        image_features(np.zeros((2, 2), np.uint8), pixel_divisor=100)


def test_dataset_and_model_config_record_channels():
    rows = torch.zeros(4, 3 * 5 * 7)
    colour = Dataset("c", rows, rows, rows, (3, 5, 7), True, "test")
    assert colour.channels == 3 and colour.image_shape == (3, 5, 7)
    grey = Dataset("g", rows[:, :35], rows[:, :35], rows[:, :35], (1, 5, 7), True, "test")
    assert grey.channels == 1 and grey.image_shape == (5, 7)  # stored as runs before colour did
    with pytest.raises(AevbError, match="has 2 channels"):
        Dataset("c", rows[:, :70], rows[:, :70], rows[:, :70], (2, 5, 7), True, "test")
    config = ModelConfig(data_dim=105, image_shape=[3, 5, 7], architecture="conv")  # as config.json lists it
    assert config.channels == 3 and ModelConfig.from_dict(config.to_dict()).image_shape == (3, 5, 7)
    assert ModelConfig(data_dim=35, image_shape=[5, 7]).channels == 1 and ModelConfig(data_dim=35).channels is None


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_a_colour_conv_model_sees_each_channel(likelihood):
    config = ModelConfig(
        data_dim=3 * 5 * 7,
        latent_dim=2,
        hidden_units=4,
        architecture="conv",
        image_shape=(3, 5, 7),
        conv_channels=(2, 3),
        likelihood=likelihood,
    )
    model = build_model(config)
    assert parameter_count(config) == sum(p.numel() for p in model.parameters())
    first = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    last = [m for m in model.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)][-1]
    heads = 2 if likelihood == "gaussian" else 1
    assert first.in_channels == 3 and last.out_channels == 3 * heads
    # Channels first: the encoder's first convolution sees row[c·35 + h·7 + w] as channel c's pixel (h, w) ...
    x = torch.rand(4, 105)
    seen = []
    hook = first.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    model.encode(x)
    hook.remove()
    torch.testing.assert_close(seen[0], x.reshape(4, 3, 5, 7), rtol=0, atol=0)
    # ... and the decoder's mean is channels 0..C-1 of its last map (head 0), flattened the same way.
    z = torch.randn(6, 2)
    maps = model.decoder.net.heads(model.decoder.net.hidden(z))
    assert maps.shape == (6, 3 * heads, 5, 7)
    torch.testing.assert_close(model.decoder.net(z)[0], maps[:, :3].reshape(6, -1))
    if heads == 2:
        torch.testing.assert_close(model.decoder.net(z)[1], maps[:, 3:].reshape(6, -1))


def test_tile_images_draws_colour_channels_last():
    rng = np.random.default_rng(1)
    images = rng.random((5, 3 * 4 * 6)).astype(np.float32)
    canvas = tile_images(images, (3, 4, 6), columns=3, padding=1)
    assert canvas.shape == (2 * 5 - 1, 3 * 7 - 1, 3)
    n, c, h, w = 4, 2, 1, 5  # image 4: row 1, column 1
    assert canvas[5 + h, 7 + w, c] == images[n, c * 24 + h * 6 + w]
    assert (canvas[4, :, :] == 1).all() and (canvas[-4:, -6:, :] == 1).all()  # padding and the empty slot: white
    assert tile_images(images[:, :24], (4, 6), columns=3).shape == (9, 20)  # grey stays 2-D


# ------------------------------------------------------------------------------ image folders


def test_a_png_folder_trains_exactly_like_the_arrays_it_was_written_from(tmp_path, capsys):
    grey = mnist_grey_levels(300)
    write_pngs(tmp_path / "digits", grey)
    np.save(tmp_path / "digits.npy", grey)
    folder, array = load_dataset(tmp_path / "digits"), load_dataset(str(tmp_path / "digits.npy"))
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(folder, split), getattr(array, split))
    assert folder.image_shape == (28, 28) and folder.pixel_divisor == 255 and folder.name == "digits"
    runs = {}
    for source in ("digits", "digits.npy"):
        runs[source] = tmp_path / f"run-{source}"
        assert call(["train", "--dataset", tmp_path / source, *QUICK, "--out", runs[source]]) == 0
    # The same values, split and seed: the same bounds at every evaluation point, to the last bit.
    folder_metrics, array_metrics = (
        [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in read_metrics(run)] for run in runs.values()
    )
    assert folder_metrics and set(folder_metrics[0]) >= METRICS_KEYS - TIMING_KEYS
    assert folder_metrics == array_metrics
    assert (runs["digits"] / "model.safetensors").read_bytes() == (
        runs["digits.npy"] / "model.safetensors"
    ).read_bytes()
    stored = [json.loads((run / "config.json").read_text())["data"] for run in runs.values()]
    assert stored[0]["values_sha256"] == stored[1]["values_sha256"] and stored[0]["split_seed"] == 0
    # evaluate reads each again, to the same split (the fingerprint is checked): the same test bound
    test_bounds = []
    for run in runs.values():
        code, out, err = run_cli(capsys, ["evaluate", run, "--json"])
        assert code == 0, err
        test_bounds.append(json.loads(out)["test_bound"])
    assert math.isfinite(test_bounds[0]) and test_bounds[0] == test_bounds[1]


def test_image_folder_layouts_modes_and_sizes(tmp_path):
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 256, size=(12, 6, 5), dtype=np.uint8)
    # class folders: labels in sorted folder order, files in name order; hidden entries skipped
    for label, name in enumerate(["cat", "dog"]):
        write_pngs(tmp_path / "classes" / name, grey[label * 6 : (label + 1) * 6])
    (tmp_path / "classes" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "classes" / "dog" / ".DS_Store").write_bytes(b"\0")
    data = load_dataset(tmp_path / "classes")
    labels = torch.cat([data.train_labels, data.valid_labels, data.test_labels])
    rows = torch.cat([data.train, data.valid, data.test])
    assert sorted(labels.tolist()) == [0] * 6 + [1] * 6 and "2 class folders" in data.source
    for row, label in zip(rows, labels):  # each row is an image of its own class's folder
        owner = torch.from_numpy(grey[label * 6 : (label + 1) * 6].reshape(6, -1) / np.float32(255))
        assert (owner == row).all(dim=1).any()
    # RGBA and palette images become RGB (alpha dropped), and the grey ones of the folder too
    folder = tmp_path / "mixed"
    write_pngs(folder, grey[:10])
    rgba = rng.integers(0, 256, size=(6, 5, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "0003.png")
    mixed = load_dataset(folder)
    assert mixed.image_shape == (3, 6, 5) and mixed.channels == 3
    everything = torch.cat([mixed.train, mixed.valid, mixed.test]).reshape(-1, 3, 6, 5)
    as_rgb = torch.from_numpy(rgba[..., :3].transpose(2, 0, 1) / np.float32(255))
    assert any(torch.equal(image, as_rgb) for image in everything)
    greys = [image for image in everything if torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])]
    assert len(greys) == 9
    # --image-size: every image resized, bilinear (a constant image stays constant)
    Image.fromarray(np.full((9, 11), 77, np.uint8)).save(folder / "0004.png")
    resized = load_dataset(folder, image_size=(4, 3))
    assert resized.image_shape == (3, 4, 3)
    assert any(bool((image == np.float32(77) / np.float32(255)).all()) for image in resized.train.reshape(-1, 36))
    # the split is seeded: another seed, another split of the same images
    reshuffled = load_dataset(tmp_path / "classes", split_seed=5)
    assert not torch.equal(reshuffled.train, data.train)
    shuffled_rows = torch.cat([reshuffled.train, reshuffled.valid, reshuffled.test])
    assert sorted(map(tuple, shuffled_rows.tolist())) == sorted(map(tuple, rows.tolist()))


def test_image_folder_errors_name_the_first_file_at_fault(tmp_path):
    folder = tmp_path / "faces"
    write_pngs(folder, np.zeros((11, 6, 5), np.uint8))
    Image.fromarray(np.zeros((7, 5), np.uint8)).save(folder / "0005.png")
    Image.fromarray(np.zeros((8, 5), np.uint8)).save(folder / "0009.png")
    with pytest.raises(AevbError) as info:
        load_dataset(folder)
    assert str(info.value) == (
        f"{folder / '0005.png'}: 5×7 pixels, but 0000.png has 5×6 (width×height); all images must share one size, "
        "or set `image_size` to resize them"
    )
    assert load_dataset(folder, image_size=(6, 5)).image_shape == (6, 5)
    cases = {
        "notes.txt": (lambda p: p.write_text("x"), "not a PNG or JPEG image"),
        "0100.png": (lambda p: p.write_bytes(b"\x89PNG broken"), "cannot read image"),
        "0101.png": (lambda p: Image.fromarray(np.zeros((6, 5), np.uint16)).save(p), "16-bit"),
        "0102.jpg": (lambda p: Image.fromarray(np.zeros((6, 5), np.uint8)).save(p, format="GIF"), "GIF image"),
    }
    for name, (write, words) in cases.items():
        path = folder / name
        write(path)
        with pytest.raises(AevbError) as info:
            load_dataset(folder, image_size=(6, 5))
        assert str(info.value).startswith(f"{path}: ") and words in str(info.value), str(info.value)
        assert "\n" not in str(info.value)
        path.unlink()
    (tmp_path / "empty").mkdir()
    with pytest.raises(AevbError, match="holds no PNG or JPEG images"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(AevbError, match="`image_size` resizes the images of a folder"):
        np.save(tmp_path / "a.npy", np.zeros((20, 3)))
        load_dataset(str(tmp_path / "a.npy"), image_size=(2, 2))
    with pytest.raises(AevbError, match="`split_seed` applies to user data"):
        load_dataset("mnist-sample", split_seed=3)


def test_cli_image_folder_flags(tmp_path, capsys):
    folder = tmp_path / "pictures"
    write_pngs(folder, np.zeros((10, 6, 5), np.uint8))
    Image.fromarray(np.zeros((7, 5), np.uint8)).save(folder / "0003.png")
    code, out, err = run_cli(capsys, ["train", "--dataset", folder, *QUICK, "--out", tmp_path / "run"])
    assert_one_line_error(code, out, err, "0003.png", "5×7", "--image-size")
    code, out, err = run_cli(
        capsys, ["train", "--dataset", "mnist-sample", "--split-seed", "3", "--out", tmp_path / "r"]
    )
    assert_one_line_error(code, out, err, "--split-seed", "mnist-sample")
    code, out, err = run_cli(
        capsys,
        ["train", "--dataset", folder, "--image-size", "4", "3", "--split-seed", "9", "--print-config"],
    )
    assert code == 0, err
    printed = json.loads(out)["data"]
    assert printed["image_size"] == [4, 3] and printed["split_seed"] == 9


# ------------------------------------------------------------------------------ colour


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_coloured_mnist_trains_and_draws_in_colour(tmp_path, capsys, architecture):
    np.save(tmp_path / "coloured.npy", coloured_mnist(300))
    run = tmp_path / "run"
    # (the MLP with Nz = 2, so that its run draws the learned manifold too)
    extra = ["--architecture", "conv", "--conv-channels", "4,8"] if architecture == "conv" else ["--latent-dim", "2"]
    assert call(["train", "--dataset", tmp_path / "coloured.npy", *QUICK, *extra, "--out", run]) == 0
    model = json.loads((run / "model.json").read_text())["model"]
    assert model["image_shape"] == [3, 28, 28] and model["data_dim"] == 3 * 784
    assert math.isfinite(json.loads((run / "summary.json").read_text())["train_bound"])
    code, out, err = run_cli(capsys, ["sample", run, "--num", "20", "--out", tmp_path / "drawn.png"])
    assert code == 0, err
    drawn = [run / "samples.png", run / "reconstructions.png", tmp_path / "drawn.png"]
    for png in drawn + ([run / "manifold.png"] if architecture == "mlp" else []):
        pixels = png_channels(png)
        # A grey figure has R = G = B everywhere; these differ by far more than rounding.
        assert np.abs(pixels[..., 0] - pixels[..., 1]).max() > 8 or np.abs(pixels[..., 1] - pixels[..., 2]).max() > 8
    # the inputs drawn in the reconstructions keep their tints: somewhere red exceeds blue by half the range
    pixels = png_channels(run / "reconstructions.png")
    assert (pixels[..., 0] - pixels[..., 2]).max() > 128 and (pixels[..., 2] - pixels[..., 0]).max() > 128
