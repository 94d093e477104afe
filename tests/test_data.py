"""Tests of aevb.data: real datasets, the embedded sample, corrupt inputs, splits, downloads.

The real files live in ``../shared/data`` beside the repository (override with
``$AEVB_TEST_DATA_DIR``); tests that need them are skipped when they are absent. No test uses
the network: socket connections are blocked for the whole module and downloads are exercised
with ``file://`` URLs.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from aevb.data import DATASET_NAMES, Dataset, formats, load_dataset, resolve_data_dir
from aevb.data import download as dl
from aevb.data.datasets import EMBEDDED_DIR
from aevb.data.splits import permutation_split
from aevb.errors import AevbError

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("AEVB_TEST_DATA_DIR") or REPO.parent / "shared" / "data")
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def need(*relative: str) -> list[Path]:
    """Paths of real data files under DATA_DIR; skips the test when any is missing."""
    paths = [DATA_DIR / r for r in relative]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"real data not available: {', '.join(missing)}")
    return paths


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def assert_user_error(fn, path) -> str:
    """``fn()`` must raise AevbError (nothing else) with a one-line message naming ``path``."""
    with pytest.raises(AevbError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message, message
    return message


# --------------------------------------------------------------------------- real datasets


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    need(*(f"mnist/{f}" for f in MNIST_FILES))
    return load_dataset("mnist", DATA_DIR)


@pytest.fixture(scope="module")
def binarized() -> Dataset:
    need(*(f"binarized_mnist/binarized_mnist_{s}.amat.gz" for s in ("train", "valid", "test")))
    return load_dataset("binarized-mnist", DATA_DIR)


@pytest.fixture(scope="module")
def frey() -> Dataset:
    need("frey/frey_rawface.mat")
    return load_dataset("frey", DATA_DIR)


def check_common(ds: Dataset, sizes, dim, image_shape):
    assert tuple(x.shape[0] for x in (ds.train, ds.valid, ds.test)) == sizes
    for x in (ds.train, ds.valid, ds.test):
        assert x.dtype == torch.float32 and x.ndim == 2 and x.shape[1] == dim and x.is_contiguous()
    assert ds.data_dim == dim
    assert ds.image_shape == image_shape
    assert "\n" not in ds.source


def test_mnist(mnist):
    check_common(mnist, (50000, 10000, 10000), 784, (28, 28))
    assert mnist.name == "mnist" and not mnist.is_binary
    # Grey levels are k/256, as in the authors' mnist.pkl.gz: 0 and 255/256 are the extremes.
    for x in (mnist.train, mnist.valid, mnist.test):
        assert x.min() == 0.0 and x.max() == 255 / 256
    assert mnist.pixel_divisor == 256
    assert torch.equal(torch.round(mnist.test * 256) / 256, mnist.test)
    # Pixel means from the README (which divides by 255), over all 60000 training images and over t10k.
    all_train = torch.cat([mnist.train, mnist.valid]).double() * 256 / 255
    assert abs(all_train.mean().item() - 0.13066) < 5e-5
    assert abs(mnist.test.double().mean().item() * 256 / 255 - 0.13251) < 5e-5
    # Labels: counts, range and the well-known first labels of each file.
    for x, y in ((mnist.train, mnist.train_labels), (mnist.valid, mnist.valid_labels), (mnist.test, mnist.test_labels)):
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
        assert y.min() == 0 and y.max() == 9
    assert mnist.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist.test_labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(mnist.test_labels).tolist()[:2] == [980, 1135]


def test_pixel_divisor_255_gives_the_iwae_protocols_grey_levels(mnist):
    iwae = load_dataset("mnist", DATA_DIR, pixel_divisor=255)
    assert iwae.pixel_divisor == 255 and iwae.train.max() == 1.0
    assert torch.allclose(iwae.test * 255, mnist.test * 256, atol=1e-4)
    for bad in (254, 0, float("nan"), float("inf")):
        with pytest.raises(AevbError, match="pixel_divisor"):
            load_dataset("mnist-sample", pixel_divisor=bad)


def test_merged_validation_split_trains_on_all_60000_images(mnist):
    from aevb.runs import DataConfig, load_data

    merged = load_data(DataConfig("mnist", str(DATA_DIR), merge_valid=True))
    assert merged.train.shape == (60000, 784) and merged.valid.shape == (0, 784)
    assert torch.equal(merged.train[50000:], mnist.valid) and torch.equal(merged.test, mnist.test)
    assert merged.train_labels.shape == (60000,) and merged.valid_labels.shape == (0,)


def test_mnist_plain_files_in_data_dir_root(mnist, tmp_path):
    """Uncompressed IDX files directly in the data dir (no mnist/ subfolder) work too."""
    src = need(*(f"mnist/{f}" for f in MNIST_FILES))
    for path in src[:2]:
        (tmp_path / path.name).symlink_to(path)
    for path in src[2:]:
        (tmp_path / path.name.removesuffix(".gz")).write_bytes(gzip.decompress(path.read_bytes()))
    ds = load_dataset("mnist", tmp_path)
    assert torch.equal(ds.test, mnist.test) and torch.equal(ds.test_labels, mnist.test_labels)
    assert torch.equal(ds.valid[-1], mnist.valid[-1])


def test_binarized_mnist(binarized):
    check_common(binarized, (50000, 10000, 10000), 784, (28, 28))
    assert binarized.name == "binarized-mnist" and binarized.is_binary
    assert binarized.train_labels is None and binarized.test_labels is None
    for x in (binarized.train, binarized.valid, binarized.test):
        assert torch.all((x == 0) | (x == 1))
    assert 0.12 < binarized.train.mean().item() < 0.14


def test_amat_general_parser_matches_fast_path(binarized, tmp_path):
    """CRLF line ends, tabs and a trailing blank line take the general parser; same values."""
    lines = [" ".join(str(int(v)) for v in row) for row in binarized.valid[:20].tolist()]
    path = tmp_path / "crlf.amat"
    path.write_bytes(("\r\n".join(line.replace(" ", "\t", 3) for line in lines) + "\r\n\r\n").encode())
    parsed = formats.read_amat_binary(path)
    assert parsed.dtype == np.uint8 and parsed.shape == (20, 784)
    assert np.array_equal(parsed, binarized.valid[:20].numpy())


def test_frey(frey):
    check_common(frey, (1565, 200, 200), 560, (28, 20))
    assert frey.name == "frey" and not frey.is_binary and frey.train_labels is None
    everything = torch.cat([frey.train, frey.valid, frey.test])
    assert everything.min().item() == 8 / 256 and everything.max().item() == 238 / 256
    assert torch.equal(torch.round(everything * 256) / 256, everything)


def test_frey_split_is_fixed_permutation(frey):
    """The splits are a fixed permutation of ff.T.reshape(-1, 28, 20), the same on every call."""
    import scipy.io

    (path,) = need("frey/frey_rawface.mat")
    faces = scipy.io.loadmat(path)["ff"].T.reshape(-1, 28, 20).reshape(1965, 560) / 256.0
    again = load_dataset("frey", DATA_DIR)
    from aevb.data.splits import FREY_SPLIT_SEED

    parts = permutation_split(1965, (1565, 200, 200), FREY_SPLIT_SEED)
    assert sorted(np.concatenate(parts).tolist()) == list(range(1965))
    for x, y, idx in zip((frey.train, frey.valid, frey.test), (again.train, again.valid, again.test), parts):
        assert torch.equal(x, y)
        assert np.array_equal(x.numpy(), faces[idx].astype(np.float32))


# --------------------------------------------------------------------------- embedded sample


def test_mnist_sample_needs_no_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("AEVB_DATA_DIR", str(tmp_path / "does-not-exist"))
    ds = load_dataset("mnist-sample")
    check_common(ds, (9000, 1000, 2000), 784, (28, 28))
    assert ds.name == "mnist-sample" and not ds.is_binary
    assert ds.train_labels.shape == (9000,) and ds.valid_labels.shape == (1000,) and ds.test_labels.shape == (2000,)
    assert ds.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert 0 <= ds.train.min() and ds.train.max() <= 1
    assert load_dataset("mnist-sample", tmp_path / "elsewhere").train.shape == (9000, 784)


def test_mnist_sample_checksums_and_size():
    sums = (EMBEDDED_DIR / "SHA256SUMS").read_text().split("\n")
    entries = [line.split("  ") for line in sums if line]
    assert sorted(name for _, name in entries) == sorted(MNIST_FILES)
    for digest, name in entries:
        assert hashlib.sha256((EMBEDDED_DIR / name).read_bytes()).hexdigest() == digest
    total = sum(p.stat().st_size for p in EMBEDDED_DIR.iterdir())
    assert total < 3_000_000
    assert "MNIST" in (EMBEDDED_DIR / "README.md").read_text()


def test_mnist_sample_is_the_head_of_mnist(mnist):
    sample = load_dataset("mnist-sample")
    assert torch.equal(sample.train, mnist.train[:9000])
    assert torch.equal(sample.valid, mnist.train[9000:10000])
    assert torch.equal(sample.test, mnist.test[:2000])
    assert torch.equal(sample.test_labels, mnist.test_labels[:2000])


def test_make_embedded_is_reproducible(tmp_path):
    need(*(f"mnist/{f}" for f in MNIST_FILES))
    from aevb.data.make_embedded import make_embedded

    make_embedded(DATA_DIR, tmp_path)
    for name in (*MNIST_FILES, "SHA256SUMS", "README.md"):
        assert (tmp_path / name).read_bytes() == (EMBEDDED_DIR / name).read_bytes(), name


def test_corrupt_embedded_file_is_reported(tmp_path, monkeypatch):
    import aevb.data.datasets as datasets

    for path in EMBEDDED_DIR.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"oops")
    monkeypatch.setattr(datasets, "EMBEDDED_DIR", tmp_path)
    assert_user_error(lambda: load_dataset("mnist-sample"), tmp_path / "t10k-labels-idx1-ubyte.gz")


@pytest.mark.parametrize("sums,words", [("", "lists no checksum for"), ("garbage\n", "not a checksum line")])
def test_an_emptied_or_garbled_checksum_list_does_not_switch_the_check_off(tmp_path, monkeypatch, sums, words):
    import aevb.data.datasets as datasets

    for path in EMBEDDED_DIR.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"oops")
    (tmp_path / "SHA256SUMS").write_text(sums)
    monkeypatch.setattr(datasets, "EMBEDDED_DIR", tmp_path)
    assert words in assert_user_error(lambda: load_dataset("mnist-sample"), tmp_path / "SHA256SUMS")


# --------------------------------------------------------------------------- corrupt inputs


def idx(array: np.ndarray, magic: int) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()


IMAGES = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
GOOD_IDX = idx(IMAGES, 2051)


def test_idx_roundtrip_gzip_and_plain(tmp_path):
    plain, packed = tmp_path / "a-idx3-ubyte", tmp_path / "b-idx3-ubyte.gz"
    plain.write_bytes(GOOD_IDX)
    packed.write_bytes(gzip.compress(GOOD_IDX))
    assert np.array_equal(formats.read_mnist_images(plain), IMAGES)
    assert np.array_equal(formats.read_mnist_images(packed), IMAGES)
    labels = tmp_path / "l-idx1-ubyte"
    labels.write_bytes(idx(np.array([3, 1, 4], dtype=np.uint8), 2049))
    assert formats.read_mnist_labels(labels).tolist() == [3, 1, 4]


IDX_CASES = {
    "wrong magic": (b"\x00\x00\x08\x01" + GOOD_IDX[4:], formats.read_mnist_images),
    "garbage magic": (b"\x89PNG" + GOOD_IDX[4:], formats.read_mnist_images),
    "too short": (b"\x00\x00", formats.read_mnist_images),
    "truncated header": (GOOD_IDX[:10], formats.read_mnist_images),
    "truncated data": (GOOD_IDX[:-100], formats.read_mnist_images),
    "trailing bytes": (GOOD_IDX + b"\x00", formats.read_mnist_images),
    "wrong dims": (idx(np.zeros((3, 28, 27), np.uint8), 2051), formats.read_mnist_images),
    "zero images": (idx(np.zeros((0, 28, 28), np.uint8), 2051), formats.read_mnist_images),
    "labels out of range": (idx(np.array([1, 10], np.uint8), 2049), formats.read_mnist_labels),
    "images as labels": (GOOD_IDX, formats.read_mnist_labels),
    "huge header dims": (b"\x00\x00\x08\x03" + b"\xff" * 12, formats.read_mnist_images),
}


@pytest.mark.parametrize("case", IDX_CASES)
def test_corrupt_idx(tmp_path, case):
    data, reader = IDX_CASES[case]
    path = tmp_path / "bad-idx-ubyte"
    path.write_bytes(data)
    assert_user_error(lambda: reader(path), path)


@pytest.mark.parametrize(
    "data",
    [b"this is not gzip at all", b"\x1f\x8b\x08\x00garbage-after-magic", gzip.compress(GOOD_IDX)[:200], b""],
    ids=["no magic", "garbage deflate", "truncated gzip", "empty"],
)
def test_corrupt_gzip(tmp_path, data):
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(data)
    assert_user_error(lambda: formats.read_mnist_images(path), path)


def test_unreadable_path(tmp_path):
    assert_user_error(lambda: formats.read_mnist_images(tmp_path), tmp_path)  # a directory
    assert_user_error(lambda: formats.read_mnist_images(tmp_path / "nope.gz"), tmp_path / "nope.gz")


def test_corrupt_mnist_file_through_load_dataset(tmp_path):
    src = need(*(f"mnist/{f}" for f in MNIST_FILES))
    sub = tmp_path / "mnist"
    sub.mkdir()
    for path in src:
        (sub / path.name).symlink_to(path)
    truncated = sub / "train-images-idx3-ubyte.gz"
    truncated.unlink()
    truncated.write_bytes(src[0].read_bytes()[:500_000])
    assert_user_error(lambda: load_dataset("mnist", tmp_path), truncated)
    # Labels that do not match the images in number.
    truncated.unlink()
    truncated.symlink_to(src[0])
    labels = sub / "t10k-labels-idx1-ubyte.gz"
    labels.unlink()
    labels.write_bytes(gzip.compress(idx(np.zeros(9999, np.uint8), 2049)))
    message = assert_user_error(lambda: load_dataset("mnist", tmp_path), labels)
    assert "9999" in message


AMAT_ROW = " ".join(["0", "1"] * 392)
AMAT_CASES = {
    "ragged line": f"{AMAT_ROW}\n{AMAT_ROW} 1\n",
    "short line": f"{AMAT_ROW}\n{' '.join(['0'] * 783)}\n",
    "value 2": f"{AMAT_ROW}\n{AMAT_ROW[:-1]}2\n",
    "value 10": f"{AMAT_ROW[:-1]}10\n",
    "non-numeric": f"{AMAT_ROW}\nx {AMAT_ROW[2:]}\n",
    "float text": f"{AMAT_ROW[:-1]}1.0\n",
    "only blank lines": "\n\n \n",
    "empty": "",
}


@pytest.mark.parametrize("case", AMAT_CASES)
def test_corrupt_amat(tmp_path, case):
    path = tmp_path / "binarized_mnist_train.amat"
    path.write_text(AMAT_CASES[case])
    message = assert_user_error(lambda: formats.read_amat_binary(path), path)
    if case in ("ragged line", "value 2", "non-numeric", "short line"):
        assert "line 2" in message


def test_amat_through_load_dataset(tmp_path):
    good = (AMAT_ROW + "\n") * 3
    for split in ("valid", "test"):
        (tmp_path / f"binarized_mnist_{split}.amat").write_text(good)
    bad = tmp_path / "binarized_mnist_train.amat.gz"
    bad.write_bytes(gzip.compress((good + AMAT_ROW.replace("1", "2", 1) + "\n").encode()))
    message = assert_user_error(lambda: load_dataset("binarized-mnist", tmp_path), bad)
    assert "line 4" in message and "'2'" in message
    bad.write_bytes(gzip.compress(good.encode()))
    ds = load_dataset("binarized-mnist", tmp_path)
    assert ds.is_binary and ds.train.shape == (3, 784) and ds.train[0, :4].tolist() == [0, 1, 0, 1]


def test_corrupt_mat(tmp_path):
    import scipy.io

    folder = tmp_path / "frey"
    folder.mkdir()
    path = folder / "frey_rawface.mat"
    scipy.io.savemat(path, {"faces": np.zeros((560, 1965), np.uint8)})
    assert "'ff'" in assert_user_error(lambda: load_dataset("frey", tmp_path), path)
    scipy.io.savemat(path, {"ff": np.zeros((560, 1965), np.float64)})
    assert "uint8" in assert_user_error(lambda: load_dataset("frey", tmp_path), path)
    scipy.io.savemat(path, {"ff": np.zeros((28, 20), np.uint8)})
    assert_user_error(lambda: load_dataset("frey", tmp_path), path)
    scipy.io.savemat(path, {"ff": np.zeros((560, 100), np.uint8)})
    assert "1965" in assert_user_error(lambda: load_dataset("frey", tmp_path), path)
    path.write_bytes(b"MATLAB 5.0 MAT-file, but then garbage" * 10)
    assert_user_error(lambda: load_dataset("frey", tmp_path), path)
    path.write_bytes(b"")
    assert_user_error(lambda: load_dataset("frey", tmp_path), path)


def save_npy(path: Path, array, allow_pickle=False) -> Path:
    np.save(path, array, allow_pickle=allow_pickle)
    return path


def test_corrupt_npy(tmp_path):
    x = np.random.default_rng(0).random((20, 4))
    nan, inf = x.copy(), x.copy()
    nan[3, 1], inf[5, 2] = np.nan, np.inf
    cases = {
        "nan": nan,
        "inf": inf,
        "empty": np.zeros((0, 784), np.float32),
        "empty-cols": np.zeros((20, 0), np.float32),
        "1d": np.zeros(20),
        "5d": np.zeros((20, 1, 2, 2, 1)),
        "4d-no-channel-axis": np.zeros((20, 5, 2, 2)),  # neither 5 nor 2 is 1, 3 or 4 channels
        "4d-ambiguous": np.zeros((20, 3, 2, 3)),  # (N, C, H, W) or (N, H, W, C)?
        "strings": np.array([["a", "b"]] * 20),
        "complex": np.zeros((20, 2), np.complex64),
        "overflow": np.full((20, 2), 1e300),
        "too-few-rows": np.zeros((9, 3)),
    }
    for name, array in cases.items():
        path = save_npy(tmp_path / f"{name}.npy", array)
        assert_user_error(lambda: load_dataset(str(path)), path)
    objects = save_npy(tmp_path / "objects.npy", np.array([[1, None]] * 20, dtype=object), allow_pickle=True)
    assert "pickle" in assert_user_error(lambda: load_dataset(str(objects)), objects)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"\x93NUMPY garbage")
    assert_user_error(lambda: load_dataset(str(garbage)), garbage)
    npz_named_npy = tmp_path / "archive.npy"
    with open(npz_named_npy, "wb") as f:
        np.savez(f, train=x)
    assert_user_error(lambda: load_dataset(str(npz_named_npy)), npz_named_npy)


def test_corrupt_npz(tmp_path):
    x = np.zeros((20, 4), np.float32)
    cases = {
        "no-train": {"valid": x},
        "typo": {"train": x, "tset": x},
        "labels-length": {"train": x, "train_labels": np.zeros(19, np.int64)},
        "labels-float": {"train": x, "train_labels": np.zeros(20)},
        "labels-alone": {"train": x, "test_labels": np.zeros(20, np.int64)},
        "dims": {"train": x, "valid": np.zeros((5, 3))},
        "nan": {"train": x, "test": np.full((5, 4), np.nan)},
        "empty-valid": {"train": x, "valid": np.zeros((0, 4))},
    }
    for name, arrays in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        assert_user_error(lambda: load_dataset(str(path)), path)
    objects = tmp_path / "objects.npz"
    np.savez(objects, train=np.array([[1, None]] * 20, dtype=object))
    assert_user_error(lambda: load_dataset(str(objects)), objects)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    assert_user_error(lambda: load_dataset(str(garbage)), garbage)


def test_unknown_name_and_unsupported_paths(tmp_path):
    message = assert_user_error(lambda: load_dataset("mnsit"), "mnsit")
    for name in DATASET_NAMES:
        assert name in message
    assert_user_error(lambda: load_dataset(str(tmp_path)), tmp_path)
    text = tmp_path / "data.csv"
    text.write_text("1,2\n")
    assert_user_error(lambda: load_dataset(str(text)), text)


def test_missing_files_without_download(tmp_path):
    for name, missing in (
        ("mnist", "train-images"),
        ("binarized-mnist", "binarized_mnist_train"),
        ("frey", "frey_rawface"),
    ):
        message = assert_user_error(lambda: load_dataset(name, tmp_path), tmp_path)
        assert missing in message and "`download`" in message and "AEVB_DATA_DIR" in message


def test_a_data_directory_that_is_a_file_is_named_as_such(tmp_path):
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0")
    message = assert_user_error(lambda: load_dataset("frey", a_file), a_file)
    assert "is a file" in message


def test_a_data_directory_that_does_not_exist_is_named_as_such(tmp_path, monkeypatch):
    monkeypatch.setenv("AEVB_DATA_DIR", str(tmp_path / "mistyped"))
    message = assert_user_error(lambda: load_dataset("frey"), tmp_path)
    assert f"the data directory {tmp_path / 'mistyped'} does not exist" in message and "AEVB_DATA_DIR" in message


# --------------------------------------------------------------------------- user arrays and splits


def test_npy_split_80_10_10_and_determinism(tmp_path):
    x = np.arange(100 * 3, dtype=np.float64).reshape(100, 3) - 7.5  # out of [0, 1]: accepted
    path = save_npy(tmp_path / "points.npy", x)
    a, b = load_dataset(str(path)), load_dataset(path)
    assert a.name == "points" and a.image_shape is None and not a.is_binary and a.train_labels is None
    check_common(a, (80, 10, 10), 3, None)
    for s in ("train", "valid", "test"):
        assert torch.equal(getattr(a, s), getattr(b, s))
    rows = torch.cat([a.train, a.valid, a.test]).numpy()
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, x.astype(np.float32).tolist()))
    assert not torch.equal(a.valid, torch.from_numpy(x[80:90].astype(np.float32)))  # shuffled


def test_npy_images_uint8_and_binary(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (10, 5, 4), dtype=np.uint8)
    ds = load_dataset(str(save_npy(tmp_path / "imgs.npy", images)))
    check_common(ds, (8, 1, 1), 20, (5, 4))
    assert torch.equal(
        torch.sort(torch.cat([ds.train, ds.valid, ds.test]).flatten()).values,
        torch.sort(torch.from_numpy(images.reshape(-1) / np.float32(255))).values,
    )
    bits = load_dataset(str(save_npy(tmp_path / "bits.npy", rng.integers(0, 2, (30, 6)))))
    assert bits.is_binary
    assert load_dataset(str(save_npy(tmp_path / "bools.npy", rng.random((30, 6)) > 0.5))).is_binary


def test_npz_carves_missing_splits_with_labels(tmp_path):
    n = 50
    x = np.repeat(np.arange(n, dtype=np.float32)[:, None], 2, axis=1)
    path = tmp_path / "mine.npz"
    np.savez(path, train=x, train_labels=np.arange(n), test=x[:7], test_labels=np.arange(7))
    ds = load_dataset(str(path))
    check_common(ds, (45, 5, 7), 2, None)
    for split in ("train", "valid", "test"):
        data, labels = getattr(ds, split), getattr(ds, f"{split}_labels")
        assert labels.dtype == torch.int64
        assert torch.equal(data[:, 0].long(), labels)  # labels follow their rows
    assert set(ds.train_labels.tolist()).isdisjoint(ds.valid_labels.tolist())
    np.savez(path, train=x)
    ds = load_dataset(str(path))
    check_common(ds, (40, 5, 5), 2, None)
    assert ds.valid_labels is None
    np.savez(path, train=x[:30], valid=x[30:40], test=x[40:])
    ds = load_dataset(str(path))
    assert torch.equal(ds.valid, torch.from_numpy(x[30:40]))


def test_permutation_split():
    parts = permutation_split(10, (6, 2, 2), seed=3)
    assert [len(p) for p in parts] == [6, 2, 2]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    assert all(np.array_equal(p, q) for p, q in zip(parts, permutation_split(10, (6, 2, 2), seed=3)))
    with pytest.raises(ValueError):
        permutation_split(10, (6, 2, 1), seed=3)


def test_dataset_helpers(tmp_path):
    ds = load_dataset(str(save_npy(tmp_path / "d.npy", np.zeros((10, 3), np.float32))))
    moved = ds.to("cpu")
    assert moved.data_dim == 3 and moved.is_binary and torch.equal(moved.train, ds.train)
    assert len(repr(ds)) < 300
    with pytest.raises(Exception):
        ds.name = "other"  # frozen


def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("AEVB_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("AEVB_DATA_DIR")
    assert resolve_data_dir() == tmp_path / "xdg" / "aevb"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "aevb"


# --------------------------------------------------------------------------- downloads


def test_pinned_checksums_match_shared_files():
    for dataset, subdir in (("mnist", "mnist"), ("frey", "frey")):
        for remote in dl.REMOTE_FILES[dataset]:
            (path,) = need(f"{subdir}/{remote.filename}")
            assert dl.sha256_file(path) == remote.sha256
            assert path.stat().st_size == remote.size
    for remote in dl.REMOTE_FILES["binarized-mnist"]:
        (path,) = need(f"binarized_mnist/{remote.filename}.gz")
        text = gzip.decompress(path.read_bytes())
        assert hashlib.sha256(text).hexdigest() == remote.sha256 and len(text) == remote.size
        assert remote.urls[0].startswith("http://www.cs.toronto.edu/~larocheh/") and remote.urls[0].endswith(".amat")
    assert dl.REMOTE_FILES["mnist"][0].urls[0].startswith("https://ossci-datasets.s3.amazonaws.com/mnist/")


def test_fetch_file(tmp_path):
    source = tmp_path / "remote" / "payload.bin"
    source.parent.mkdir()
    source.write_bytes(b"some bytes" * 1000)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "sub" / "payload.bin"
    assert dl.fetch_file([source.as_uri()], dest, digest) == dest
    assert dest.read_bytes() == source.read_bytes()

    def offline(*args, **kwargs):
        raise AssertionError("cache hit must not open a URL")

    assert dl.fetch_file(["http://example.invalid/x"], dest, digest, opener=offline) == dest  # cache hit

    # Mirrors are tried in order.
    other = tmp_path / "cache" / "other.bin"
    assert dl.fetch_file([(tmp_path / "missing").as_uri(), source.as_uri()], other, digest) == other

    # Wrong checksum: error, nothing left behind.
    bad = tmp_path / "cache" / "bad.bin"
    message = assert_user_error(lambda: dl.fetch_file([source.as_uri()], bad, "0" * 64), "bad.bin")
    assert "SHA-256 mismatch" in message
    assert not bad.exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["other.bin", "sub"]
    assert list((tmp_path / "cache" / "sub").iterdir()) == [dest]

    # A corrupt cached file is replaced.
    dest.write_bytes(b"corrupt")
    assert dl.fetch_file([source.as_uri()], dest, digest).read_bytes() == source.read_bytes()
    assert_user_error(lambda: dl.fetch_file(["not a url"], tmp_path / "cache" / "u.bin", digest), "u.bin")


def test_load_dataset_download(tmp_path, monkeypatch, frey):
    (mat,) = need("frey/frey_rawface.mat")
    remote = dl.REMOTE_FILES["frey"][0]
    monkeypatch.setitem(dl.REMOTE_FILES, "frey", (dl.RemoteFile(remote.filename, remote.sha256, (mat.as_uri(),)),))
    ds = load_dataset("frey", tmp_path, download=True)
    assert (tmp_path / "frey" / "frey_rawface.mat").is_file()
    assert torch.equal(ds.train, frey.train)
    # With a wrong pinned checksum the download is refused.
    monkeypatch.setitem(dl.REMOTE_FILES, "frey", (dl.RemoteFile(remote.filename, "f" * 64, (mat.as_uri(),)),))
    assert_user_error(lambda: load_dataset("frey", tmp_path / "other", download=True), "frey_rawface.mat")
    assert not (tmp_path / "other" / "frey" / "frey_rawface.mat").exists()


class FakeResponse:
    """What the URL opener returns: ``body`` (bytes) or, without one, an endless body of zeros made
    as it is read, never held; ``headers`` like an HTTP response's."""

    # Far past every cap below: a download that is not stopped fails the test instead of filling the disk.
    MOST_A_DOWNLOAD_MAY_READ = 8 << 20

    def __init__(self, body: bytes | None = None, headers: dict | None = None):
        self.body, self.headers, self.bytes_sent = body, headers or {}, 0

    def read(self, size: int = -1) -> bytes:
        assert size is not None and size >= 0, "an unbounded read"
        if self.body is None:
            assert self.bytes_sent <= self.MOST_A_DOWNLOAD_MAY_READ, "the download of an endless body did not stop"
            chunk = bytes(size)
        else:
            chunk = self.body[self.bytes_sent : self.bytes_sent + size]
        self.bytes_sent += len(chunk)
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


def serve(responses: dict[str, FakeResponse]):
    """A URL opener that answers each URL with its response."""

    def opener(url, timeout):
        return responses[url]

    return opener


def cache_with_stale_copy(tmp_path: Path, name: str = "payload.bin") -> tuple[Path, dict[str, bytes]]:
    """A cache folder holding a stale copy of ``name`` and another file; returns dest and contents."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / name).write_bytes(b"an older, stale copy")
    (cache / "neighbour.bin").write_bytes(b"some other file")
    return cache / name, {p.name: p.read_bytes() for p in cache.iterdir()}


def test_download_of_an_endless_body_stops_at_the_files_size(tmp_path):
    (frey,) = dl.REMOTE_FILES["frey"]
    dest, before = cache_with_stale_copy(tmp_path, frey.filename)
    endless = FakeResponse()
    evil = "https://evil.invalid/frey_rawface.mat"
    # The size cap comes from the pinned checksum, as for load_dataset's downloads.
    message = assert_user_error(lambda: dl.fetch_file([evil], dest, frey.sha256, opener=serve({evil: endless})), evil)
    assert "frey_rawface.mat" in message and "1,100,584-byte cap" in message
    assert endless.bytes_sent == 1_100_585  # stopped at the first byte too many
    assert {p.name: p.read_bytes() for p in dest.parent.iterdir()} == before  # no partial file, nothing replaced

    # With a size given: the next mirror is still tried, and a body of the right size goes through.
    payload = b"the right bytes" * 100
    digest = hashlib.sha256(payload).hexdigest()
    dest = dest.parent / "payload.bin"
    good = "https://good.invalid/payload.bin"
    opener = serve({evil: FakeResponse(), good: FakeResponse(payload)})
    assert dl.fetch_file([evil, good], dest, digest, size=len(payload), opener=opener).read_bytes() == payload


def test_download_announcing_too_many_bytes_is_not_read(tmp_path):
    payload = b"x" * 1000
    digest = hashlib.sha256(payload).hexdigest()
    dest, before = cache_with_stale_copy(tmp_path)
    url = "https://mirror.invalid/payload.bin"
    announced = FakeResponse(b"", headers={"Content-Length": str(10**12)})
    message = assert_user_error(
        lambda: dl.fetch_file([url], dest, digest, size=1000, opener=serve({url: announced})), url
    )
    assert "1,000,000,000,000 bytes" in message and "1,000-byte cap" in message
    assert announced.bytes_sent == 0
    assert {p.name: p.read_bytes() for p in dest.parent.iterdir()} == before
    # urllib's own responses announce a length too (here a file:// one).
    source = tmp_path / "remote.bin"
    source.write_bytes(payload + b"and then some")
    message = assert_user_error(lambda: dl.fetch_file([source.as_uri()], dest, digest, size=1000), "payload.bin")
    assert "announces 1,013 bytes" in message
    assert {p.name: p.read_bytes() for p in dest.parent.iterdir()} == before


def test_download_of_unknown_size_is_capped(tmp_path, monkeypatch):
    largest = max(r.size for remotes in dl.REMOTE_FILES.values() for r in remotes)
    assert largest < dl.MAX_DOWNLOAD_BYTES <= 100_000_000
    monkeypatch.setattr(dl, "MAX_DOWNLOAD_BYTES", 50_000)  # the real cap, scaled down to keep the test quick
    dest, before = cache_with_stale_copy(tmp_path)
    endless = FakeResponse()
    url = "https://mirror.invalid/payload.bin"
    message = assert_user_error(lambda: dl.fetch_file([url], dest, "0" * 64, opener=serve({url: endless})), url)
    assert "50,000-byte cap" in message and "size is not known" in message
    assert endless.bytes_sent == 50_001
    assert {p.name: p.read_bytes() for p in dest.parent.iterdir()} == before


def test_load_dataset_download_is_capped_at_the_pinned_size(tmp_path, monkeypatch):
    """Through load_dataset and urllib's opener: the real Frey Face entry caps its download."""
    import urllib.request

    (remote,) = dl.REMOTE_FILES["frey"]
    endless = FakeResponse()
    monkeypatch.setattr(urllib.request, "urlopen", serve({url: endless for url in remote.urls}))
    message = assert_user_error(lambda: load_dataset("frey", tmp_path, download=True), remote.urls[0])
    assert "frey_rawface.mat" in message and "1,100,584-byte cap" in message
    assert endless.bytes_sent == 1_100_585
    assert list((tmp_path / "frey").iterdir()) == []


def test_random_bytes_are_not_mistaken_for_a_pickle(tmp_path):
    path = tmp_path / "noise.npy"
    path.write_bytes(np.random.default_rng(1).bytes(500))
    with pytest.raises(AevbError, match="not a NumPy"):
        load_dataset(str(path))
